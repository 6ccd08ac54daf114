-- Extend the leases of the slots one worker holds at a provider (its running jobs), on each heartbeat.
-- KEYS: 1 slots zset (job id -> ms its lease runs until)
-- ARGV: 1 lease ms, 2.. job ids
-- Returns how many of those jobs still held a slot.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local held = 0
for i = 2, #ARGV do
  held = held + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + lease, ARGV[i])
end
if #ARGV > 1 then
  redis.call('PEXPIRE', KEYS[1], lease)
end
return held
