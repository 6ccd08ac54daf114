-- Take batch lines for a worker's spare slots, only while no interactive job waits in the pool's queue.
-- KEYS[1] the pool's interactive rq queue; KEYS[2] its batch lane's rq queue; KEYS[3] the lane's rq
-- intermediate queue (where a job taken but not yet started waits, as after rq's BLMOVE)
-- ARGV[1] at most this many lines
-- Returns the ids of the jobs taken (none while an interactive job is queued).
if redis.call('LLEN', KEYS[1]) > 0 then
  return {}
end
local taken = {}
for _ = 1, tonumber(ARGV[1]) do
  local id = redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT')
  if not id then
    break
  end
  taken[#taken + 1] = id
end
return taken
