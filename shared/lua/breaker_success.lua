-- Record one success of a deployment: a half-open breaker closes; closed and open ones are unchanged
-- (a success that finishes during the cooldown started before the trip and proves nothing).
-- KEYS: 1 state hash, 2 failures zset, 3 blocked zset
-- ARGV: 1 deployment id
-- Returns the state after the call: 'closed' or 'open'.
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until'))
if not open_until then
  return 'closed'
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now < open_until then
  return 'open'
end
redis.call('HDEL', KEYS[1], 'open_until', 'probe_until')
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return 'closed'
