-- Push back the deadline of a reservation still held (its job is running): a lease that lapses only when
-- nobody renews it any more (the processes that could settle it died), so the sweep then releases it.
-- A deadline is never brought forward.
--
-- KEYS[1] the reservation's record, KEYS[2] the open reservations
-- ARGV[1] reservation id, ARGV[2] milliseconds from now the hold is to last at least
-- Returns the deadline (ms of Redis TIME), or 0 when the reservation is no longer held.

local record = redis.call('HMGET', KEYS[1], 'state', 'deadline')
if record[1] ~= 'held' then
  return 0
end
local time = redis.call('TIME')
local deadline = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) + tonumber(ARGV[2])
if deadline <= tonumber(record[2]) then
  return tonumber(record[2])
end
redis.call('HSET', KEYS[1], 'deadline', string.format('%d', deadline))
redis.call('ZADD', KEYS[2], string.format('%d', deadline), ARGV[1])
return deadline
