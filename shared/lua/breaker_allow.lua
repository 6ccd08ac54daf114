-- May a request go to this deployment?  Closed: yes.  Open: no.  Half-open: exactly one caller claims
-- the probe (until it reports, or until its claim expires); everyone else is refused.
-- KEYS: 1 state hash, 2 blocked zset
-- ARGV: 1 deployment id, 2 probe timeout ms
-- Returns {decision, ms until another caller may be admitted}: decision is 'closed' or 'probe' (admitted),
-- 'open' or 'probing' (refused).
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until'))
if not open_until then
  return {'closed', 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now < open_until then
  return {'open', open_until - now}
end
local probe_until = tonumber(redis.call('HGET', KEYS[1], 'probe_until'))
if probe_until and now < probe_until then
  return {'probing', probe_until - now}
end
probe_until = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'probe_until', probe_until)
redis.call('ZADD', KEYS[2], probe_until, ARGV[1])
return {'probe', 0}
