-- Record one batch line's result, unless the line already has one (a late duplicate run is dropped).
-- KEYS[1] the batch's done bitmap; KEYS[2] the batch's results hash
-- ARGV[1] line number; ARGV[2] the result ("O" or "E", then the JSON output line)
-- Returns 1 when recorded, 0 when the line already had a result.
if redis.call('GETBIT', KEYS[1], ARGV[1]) == 1 then
  return 0
end
return redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
