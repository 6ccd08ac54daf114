"""Which batch lines in flight the driver takes for lost (``ingress.batches.lost_lines``), on a real Redis."""

from __future__ import annotations

import time

import redis.asyncio as aredis
from rq.job import Job

from ingress.batches.attempts import Attempt
from ingress.batches.lost_lines import lost_attempts
from shared import keys
from shared.credits import Reservation

STUCK_AFTER = 12.0
POOL = "sim"


def _attempt(job_id: str, *, waited: float) -> Attempt:
    reservation = Reservation("res_1", "acct", 100, 0)
    return Attempt(0, "q0", job_id, POOL, 1, reservation, "m", {}, time.time() - waited)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_line_taken_after_a_long_wait_in_its_lane_is_not_lost_before_it_starts(
    aredis_client: aredis.Redis,
) -> None:
    """A line dispatched a minute ago and just taken out of its lane (still ``queued``: its worker has
    yet to start it) is not run again; it is lost only once it stays out of the lane, unstarted, for
    ``stuck_after`` from the first look that found it so."""
    attempt = _attempt("job1", waited=60.0)
    lane = keys.rq_queue_key(keys.batch_lane(POOL))
    await aredis_client.hset(Job.key_for("job1"), mapping={"status": "queued"})
    await aredis_client.rpush(lane, "job1")
    clock = Clock()
    seen: dict[str, float] = {}

    async def lost() -> list[Attempt]:
        return await lost_attempts(
            aredis_client, "b1", [attempt], stuck_after=STUCK_AFTER, out_of_lane_since=seen, clock=clock
        )

    assert await lost() == []  # waiting in its lane
    await aredis_client.lmove(lane, f"{lane}:intermediate", "LEFT", "RIGHT")  # a worker takes it
    assert await lost() == []
    clock.now += STUCK_AFTER - 1
    assert await lost() == []
    clock.now += 2  # its worker never started it: it died between taking and starting
    assert await lost() == [attempt]


async def test_a_line_its_worker_started_is_forgotten_by_the_lane_watch(aredis_client: aredis.Redis) -> None:
    """Once a line's job is started, or leaves the lines in flight, the first look kept for it is dropped."""
    attempt = _attempt("job2", waited=60.0)
    await aredis_client.hset(Job.key_for("job2"), mapping={"status": "queued"})
    clock = Clock()
    seen: dict[str, float] = {}
    assert (
        await lost_attempts(
            aredis_client, "b1", [attempt], stuck_after=STUCK_AFTER, out_of_lane_since=seen, clock=clock
        )
        == []
    )
    assert seen == {"job2": clock.now}
    await aredis_client.hset(Job.key_for("job2"), mapping={"status": "started", "worker_name": "w"})
    await aredis_client.set(keys.worker_alive("w"), "1")
    await lost_attempts(aredis_client, "b1", [attempt], stuck_after=STUCK_AFTER, out_of_lane_since=seen)
    assert seen == {}
    seen["gone"] = 1.0
    await lost_attempts(aredis_client, "b1", [], stuck_after=STUCK_AFTER, out_of_lane_since=seen)
    assert seen == {}


async def test_a_line_dispatched_less_than_stuck_after_ago_is_not_looked_for_in_its_lane(
    aredis_client: aredis.Redis,
) -> None:
    """A young line is never lost for being out of its lane (it was dispatched within ``stuck_after``), so
    the driver spends no walk of the lane on it, and keeps no first look for it."""
    attempt = _attempt("job3", waited=1.0)
    await aredis_client.hset(Job.key_for("job3"), mapping={"status": "queued"})  # taken: not in the lane
    clock = Clock()
    seen: dict[str, float] = {}
    for _ in range(2):
        assert (
            await lost_attempts(
                aredis_client, "b1", [attempt], stuck_after=STUCK_AFTER, out_of_lane_since=seen, clock=clock
            )
            == []
        )
        clock.now += 2 * STUCK_AFTER
    assert seen == {}
