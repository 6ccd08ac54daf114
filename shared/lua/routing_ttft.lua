-- Fold one time-to-first-token sample into a deployment's exponentially decayed average.
-- KEYS: 1 ttft hash
-- ARGV: 1 sample ms, 2 weight of the new sample (0..1], 3 ms without samples after which the average is forgotten
-- Returns the new average in ms, as a string (Lua numbers would be truncated to integers).
local sample, alpha = tonumber(ARGV[1]), tonumber(ARGV[2])
local avg = tonumber(redis.call('HGET', KEYS[1], 'avg_ms'))
if avg then
  avg = avg + alpha * (sample - avg)
else
  avg = sample
end
redis.call('HSET', KEYS[1], 'avg_ms', string.format('%.3f', avg))
redis.call('HINCRBY', KEYS[1], 'samples', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return string.format('%.3f', avg)
