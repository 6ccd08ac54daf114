-- Move a batch to a new status, only from one of the allowed ones (the driver and a cancel may race).
-- KEYS[1] the batch record
-- ARGV[1] allowed current statuses, space-separated; ARGV[2] the new status;
-- ARGV[3..] field, value pairs to set with it (its *_at timestamp, file ids, errors)
-- Returns 1 when moved, 0 when the batch was not in an allowed status (or does not exist).
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return 0
end
if not string.find(' ' .. ARGV[1] .. ' ', ' ' .. status .. ' ', 1, true) then
  return 0
end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
