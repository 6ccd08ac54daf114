-- Hold a validated batch's lines against its account's plan limit of lines queued in batches.
-- KEYS[1] the account's queued-lines counter; KEYS[2] the batch record
-- ARGV[1] the batch's lines; ARGV[2] the plan's limit
-- Returns 1 when held (or already held by this batch), 0 when the limit would be passed.
if redis.call('HGET', KEYS[2], 'admitted') == '1' then
  return 1
end
local queued = tonumber(redis.call('GET', KEYS[1]) or '0')
if queued + tonumber(ARGV[1]) > tonumber(ARGV[2]) then
  return 0
end
redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'admitted', '1')
return 1
