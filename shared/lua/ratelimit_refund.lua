-- Give back tokens a request was counted for but did not use (its estimate exceeded its usage).
--
-- KEYS[1] the token limit's theoretical arrival time (integer µs of Redis TIME)
-- ARGV[1] tokens to give back, ARGV[2] the limit's emission interval in µs per token
-- Returns the µs until the limit is fully restored after the refund.

local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local new_tat = math.max(now, tat - tonumber(ARGV[1]) * tonumber(ARGV[2]))
if new_tat <= now then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return new_tat - now
