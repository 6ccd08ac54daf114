-- Give back a finished batch's lines to its account's queued-lines counter, once.
-- KEYS[1] the account's queued-lines counter; KEYS[2] the batch record
-- Returns 1 when given back, 0 when this batch held none (any more).
if redis.call('HGET', KEYS[2], 'admitted') ~= '1' then
  return 0
end
redis.call('HSET', KEYS[2], 'admitted', '0')
local left = redis.call('DECRBY', KEYS[1], tonumber(redis.call('HGET', KEYS[2], 'total') or '0'))
if left <= 0 then
  redis.call('DEL', KEYS[1])
end
return 1
