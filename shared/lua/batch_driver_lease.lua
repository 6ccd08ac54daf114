-- Take or keep the batch driver's lease: one process drives every batch at a time.
-- KEYS[1] the lease; ARGV[1] this driver's name; ARGV[2] the lease's length in ms
-- Returns 1 when this driver holds the lease now, 0 when another one does.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
