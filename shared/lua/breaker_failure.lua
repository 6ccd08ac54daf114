-- Record one failure of a deployment and open its breaker when the sliding window is full.
-- KEYS: 1 state hash, 2 failures zset, 3 blocked zset, 4 known-deployments set
-- ARGV: 1 deployment id, 2 failure threshold, 3 window ms, 4 cooldown ms
-- Returns {state, failures in window, ms until the breaker admits a probe (0 when closed)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, threshold = ARGV[1], tonumber(ARGV[2])
local window, cooldown = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('SADD', KEYS[4], id)

local function trip()
  local open_until = now + cooldown
  redis.call('HSET', KEYS[1], 'open_until', open_until)
  redis.call('HDEL', KEYS[1], 'probe_until')
  redis.call('HINCRBY', KEYS[1], 'trips', 1)
  redis.call('DEL', KEYS[2])
  redis.call('ZADD', KEYS[3], open_until, id)
  return {'open', 0, cooldown}
end

local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until'))
if open_until then
  if now < open_until then
    return {'open', 0, open_until - now}  -- a straggler from before the trip: already open
  end
  return trip()  -- half-open: the probe (or anything else) failed, so cool down again
end

local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('ZADD', KEYS[2], now, seq)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
redis.call('PEXPIRE', KEYS[2], window)
local failures = redis.call('ZCARD', KEYS[2])
if failures >= threshold then
  return trip()
end
return {'closed', failures, 0}
