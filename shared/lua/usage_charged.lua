-- Write one request's usage record with the cost its settlement charged, not the cost the worker
-- computed: credit_settle.lua, earlier in the same round trip, wrote the charge on the reservation's
-- record (`charged`; 0 when the hold had been released before, less than the tokens' cost when the
-- balance could not cover it all), so the record and the day's totals say what the account paid.
--
-- KEYS[1] the reservation's record
-- ARGV[1] seconds a mark made on a record that is gone lives (CREDIT_RESERVATION_TOMBSTONE_TTL),
-- ARGV[2] how many arguments carry the cost (n), ARGV[3..n+2] their positions among the commands that
-- follow (1-based, the first command's argument count being 1), then the commands, each as its argument
-- count followed by the command and its arguments (usage.usage_commands').
-- Returns the cost written, as a string; nil when the reservation's record says it was written already.
--
-- Once per reservation: the record is marked (`recorded`), so a round trip resent because its reply was
-- lost (workers/publisher.py) does not write the usage twice.  A record that is gone (its hold expired
-- and its tombstone too) gets a mark of its own that lives as long as a tombstone.

if redis.call('HSETNX', KEYS[1], 'recorded', '1') == 0 then
  return nil
end
if redis.call('TTL', KEYS[1]) == -1 and redis.call('HLEN', KEYS[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])  -- the mark alone: the record was gone
end
local charged = redis.call('HGET', KEYS[1], 'charged') or '0'
local n = tonumber(ARGV[2])
local args = {}
for i = n + 3, #ARGV do
  args[i - n - 2] = ARGV[i]
end
for i = 3, n + 2 do
  args[tonumber(ARGV[i])] = charged
end
local i = 1
while i <= #args do
  local count = tonumber(args[i])
  redis.call(unpack(args, i + 1, i + count))
  i = i + count + 1
end
return charged
