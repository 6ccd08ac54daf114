-- Take a job that no worker picked up off its queue and delete its record, atomically: a record is
-- deleted only with its id's removal from the queue, and never left behind without it.
-- KEYS[1] the pool's rq queue, KEYS[2] the job's rq hash
-- ARGV[1] the job id
-- Returns 1 when it was withdrawn, 0 when it was not in the queue (a worker has it, or it is gone).

if redis.call('LREM', KEYS[1], 1, ARGV[1]) > 0 then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
