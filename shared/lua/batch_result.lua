-- Record one batch line's result, unless the line already has one (a late duplicate run is dropped) or,
-- for a worker's result, the line's attempt in flight is not that job's: a job the driver gave up on as
-- lost (its credit hold released, the line queued again) records nothing, and neither does a job ending
-- after its batch was finalized (the in-flight hash is gone), so the results hash is never made again.
-- A recorded answer adds its tokens to the batch's usage, so they count once however often it is sent.
-- KEYS[1] the batch's done bitmap; KEYS[2] the batch's results hash; KEYS[3] (a worker's result) the
-- batch's in-flight attempts hash; KEYS[4] (an answer) the batch record
-- ARGV[1] line number; ARGV[2] the result ("O" or "E", then the JSON output line); ARGV[3] (a worker's
-- result) the job's id; ARGV[4..7] (an answer) its input, cached input, output and reasoning tokens
-- Returns 1 when recorded, 0 when the line already had a result or the job is not the line's attempt.
if ARGV[3] then
  local attempt = redis.call('HGET', KEYS[3], ARGV[1])
  if not attempt or not string.find(attempt, '"job":"' .. ARGV[3] .. '"', 1, true) then
    return 0
  end
end
if redis.call('GETBIT', KEYS[1], ARGV[1]) == 1 then
  return 0
end
local recorded = redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
if recorded == 1 and KEYS[4] then
  redis.call('HINCRBY', KEYS[4], 'input_tokens', ARGV[4])
  redis.call('HINCRBY', KEYS[4], 'cached_tokens', ARGV[5])
  redis.call('HINCRBY', KEYS[4], 'output_tokens', ARGV[6])
  redis.call('HINCRBY', KEYS[4], 'reasoning_tokens', ARGV[7])
end
return recorded
