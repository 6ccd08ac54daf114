-- The deployments routing must skip right now (cooling down, or their one probe is in flight).
-- KEYS: 1 blocked zset
-- Returns a flat list {deployment id, ms until it may admit again, ...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
for i = 2, #rows, 2 do
  rows[i] = tonumber(rows[i]) - now
end
return rows
