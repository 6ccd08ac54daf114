"""Which of a batch's lines in flight got lost: their job ended without a result, or its worker died.

A line's job is lost when, with no result recorded for the line:

- its rq record is gone, or says ``failed``/``stopped``/``canceled`` (a retryable upstream failure, a
  time-out, or rq's clean-up of a dead worker's job);
- it is ``started`` by a worker whose liveness key expired (killed with -9);
- it was dispatched more than ``stuck_after`` seconds ago, is still ``queued`` but no longer in the lane,
  and was so at every look for ``stuck_after`` seconds (taken by a worker that died before starting it;
  :func:`stuck_after` is a few times the time a dead worker takes to be seen).  Only lines that old are
  looked for in their lane (an ``LPOS`` each, a walk of the lane).  The out-of-lane time counts from the
  first look that found it so, not from its dispatch: a line that waited long in a busy lane is out of
  it but not yet started for the round trip between a worker taking it and starting it, and a look in
  that window must not run it again (it would run twice, its upstream paid twice).  ``out_of_lane_since``
  carries those first looks from one call to the next; a driver that starts (or takes over) starts with
  none, and so waits ``stuck_after`` from its own first look.

The result is read after the job's status: a worker records a line's result before its job's final
status, in the same round trip, so an ended job without a result has none coming.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Final

import redis.asyncio as aredis
from rq.job import Job

from ingress.batches.attempts import Attempt
from shared import keys

_ENDED: Final = frozenset({b"failed", b"stopped", b"canceled"})


def stuck_after(worker_dead_after: float) -> float:
    return max(5.0, 3 * worker_dead_after)


async def lost_attempts(
    redis: aredis.Redis,
    batch_id: str,
    attempts: Sequence[Attempt],
    *,
    stuck_after: float,
    out_of_lane_since: dict[str, float],
    clock: Callable[[], float] = time.monotonic,
) -> list[Attempt]:
    """The lost ones of ``attempts``; ``out_of_lane_since`` maps a job id to the ``clock`` time a look
    first found it queued and out of its lane (kept across calls, pruned to ``attempts``)."""
    in_flight = {attempt.job_id for attempt in attempts}
    for job_id in list(out_of_lane_since):
        if job_id not in in_flight:
            del out_of_lane_since[job_id]
    if not attempts:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for attempt in attempts:
            pipe.hmget(Job.key_for(attempt.job_id), "status", "worker_name")
        states = await pipe.execute()
    wall_now = time.time()
    suspects: list[tuple[Attempt, str]] = []  # (attempt, what to check next: "" / worker name / "lane")
    for attempt, (status, worker) in zip(attempts, states, strict=True):
        if status is None or status in _ENDED:
            suspects.append((attempt, ""))
        elif status == b"queued":
            if wall_now - attempt.dispatched_at > stuck_after:  # a younger one is not lost yet, in any case
                suspects.append((attempt, "lane"))  # (an LPOS each: only lines that waited that long)
            else:
                out_of_lane_since.pop(attempt.job_id, None)
            continue
        elif status == b"started" and worker:
            suspects.append((attempt, worker.decode()))
        out_of_lane_since.pop(attempt.job_id, None)  # started (or ended): out of its lane for good
    if not suspects:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for attempt, check in suspects:
            if check == "lane":
                pipe.lpos(keys.rq_queue_key(keys.batch_lane(attempt.pool)), attempt.job_id)
            elif check:
                pipe.exists(keys.worker_alive(check))
            else:
                pipe.exists("")  # a placeholder reply: nothing more to check
            pipe.hexists(keys.batch_results(batch_id), str(attempt.index))
            pipe.getbit(keys.batch_done(batch_id), attempt.index)
        replies = await pipe.execute()
    lost = []
    now = clock()
    for number, (attempt, check) in enumerate(suspects):
        alive, has_result, done = replies[3 * number : 3 * number + 3]
        if check == "lane":
            if has_result or done or alive is not None:
                out_of_lane_since.pop(attempt.job_id, None)
                continue  # answered, or still waiting in the lane
            if now - out_of_lane_since.setdefault(attempt.job_id, now) < stuck_after:
                continue  # taken by a worker that has yet to start it
        if has_result or done:
            continue
        if check and check != "lane" and alive:
            continue  # its worker is still running it
        lost.append(attempt)
    return lost
