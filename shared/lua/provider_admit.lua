-- May one more upstream call start at this provider?  Checks its provider-wide caps, across every worker.
-- KEYS: 1 slots zset (job id -> ms its lease runs until), 2 calls zset (job id -> ms it was admitted)
-- ARGV: 1 job id, 2 concurrency cap (0 = none), 3 calls-per-minute cap (0 = none), 4 lease ms
-- Returns {1, 0} when admitted (the job holds a slot until released or its lease runs out), else
-- {0, ms until room is likely}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local job, concurrency, per_minute, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])

if concurrency > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if not redis.call('ZSCORE', KEYS[1], job) and redis.call('ZCARD', KEYS[1]) >= concurrency then
    return {0, 50}  -- a slot frees when some call ends: soon, but nobody knows when
  end
end
if per_minute > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
  if redis.call('ZCARD', KEYS[2]) >= per_minute then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return {0, math.max(1, tonumber(oldest[2]) + 60000 - now)}
  end
  redis.call('ZADD', KEYS[2], now, job)
  redis.call('PEXPIRE', KEYS[2], 60000)
end
if concurrency > 0 then
  redis.call('ZADD', KEYS[1], now + lease, job)
  redis.call('PEXPIRE', KEYS[1], lease)
end
return {1, 0}
