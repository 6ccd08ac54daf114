-- Write one request's usage record with the cost its settlement charged, not the cost the worker
-- computed: credit_settle.lua, earlier in the same round trip, wrote the charge on the reservation's
-- record (`charged`; 0 when the hold had been released before, the hold when the tokens cost more), so
-- the record and the day's totals say what the account paid.
--
-- KEYS[1] the reservation's record
-- ARGV[1] how many arguments carry the cost (n), ARGV[2..n+1] their positions among the commands that
-- follow (1-based, the first command's argument count being 1), then the commands, each as its argument
-- count followed by the command and its arguments (usage.queue_usage's).
-- Returns the cost written, as a string; nil when the reservation's record says it was written already.
--
-- Once per reservation: the record is marked (`recorded`), so a round trip resent because its reply was
-- lost (workers/publisher.py) does not write the usage twice.  A record that is gone (it outlives its
-- settlement by minutes, far longer than a resend) cannot be marked: the usage is written, at no cost.

if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('HSETNX', KEYS[1], 'recorded', '1') == 0 then
  return nil
end
local charged = redis.call('HGET', KEYS[1], 'charged') or '0'
local n = tonumber(ARGV[1])
local args = {}
for i = n + 2, #ARGV do
  args[i - n - 1] = ARGV[i]
end
for i = 2, n + 1 do
  args[tonumber(ARGV[i])] = charged
end
local i = 1
while i <= #args do
  local count = tonumber(args[i])
  redis.call(unpack(args, i + 1, i + count))
  i = i + count + 1
end
return charged
