-- Release the hold of a reservation whose deadline has passed (its request's process died, or it ran
-- past every timeout).  A late settle still finds the record, marked expired.
--
-- KEYS[1] the account's credit hash, KEYS[2] the reservation's record, KEYS[3] the open reservations
-- ARGV[1] reservation id, ARGV[2] seconds to keep the expired record
-- Returns 1 when released, 0 when it was not held or its deadline has not passed.

local record = redis.call('HMGET', KEYS[2], 'state', 'amount', 'deadline')
if record[1] ~= 'held' then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 0
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if tonumber(record[3]) > now then
  return 0
end
redis.call('HINCRBY', KEYS[1], 'reserved', string.format('%d', -tonumber(record[2])))  -- never '-0'
redis.call('HSET', KEYS[2], 'state', 'expired')
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
