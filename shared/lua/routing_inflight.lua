-- One worker's count of running jobs on one deployment, with a lease so a killed worker stops counting.
-- KEYS: 1 counts hash (worker -> jobs), 2 leases zset (worker -> ms of Redis TIME its count is trusted until)
-- ARGV: 1 worker name, 2 'add' or 'set', 3 amount, 4 lease ms
-- Returns the worker's count after the call.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local worker, lease = ARGV[1], tonumber(ARGV[4])

-- Workers whose lease ran out were killed without finishing their jobs: drop their counts.
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, name in ipairs(dead) do
  redis.call('HDEL', KEYS[1], name)
  redis.call('ZREM', KEYS[2], name)
end

local count
if ARGV[2] == 'add' then
  count = redis.call('HINCRBY', KEYS[1], worker, ARGV[3])
else
  count = tonumber(ARGV[3])
end
if count <= 0 then
  redis.call('HDEL', KEYS[1], worker)
  redis.call('ZREM', KEYS[2], worker)
  return 0
end
redis.call('HSET', KEYS[1], worker, count)
redis.call('ZADD', KEYS[2], now + lease, worker)
redis.call('PEXPIRE', KEYS[1], lease)
redis.call('PEXPIRE', KEYS[2], lease)
return count
