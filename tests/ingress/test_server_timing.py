"""``Server-Timing`` on completions: where the request's time went (admission, enqueue, pick-up, the
worker's preparation, the upstream) and the total on a JSON answer; on a stream, what is known when its
headers leave with the first content (no total)."""

from __future__ import annotations

import re

from tests.ingress.conftest import MESSAGES, MODEL, Ingress

STREAM_BODY = {"model": MODEL, "messages": MESSAGES, "stream": True}


def timings(header: str) -> dict[str, float]:
    """``name;dur=ms`` entries of a Server-Timing value."""
    found = dict(re.findall(r"([\w-]+);dur=([0-9.]+)", header))
    return {name: float(value) for name, value in found.items()}


async def test_a_json_answer_times_every_step_and_the_total(ingress: Ingress) -> None:
    """A JSON answer's Server-Timing has admission, enqueue, pick-up, the worker's preparation (its S
    frame's ``prep_ms``), the worker's upstream TTFB and whole call, and the total; the steps before
    the upstream add up to no more than the total."""
    request = ingress.chat_task()
    taken = await ingress.worker.take()
    await ingress.worker.start(taken, prep_ms=0.25)
    await ingress.worker.done(taken, "hi", timing={"ttfb_ms": 12.5, "upstream_ms": 20.0})
    response = await request
    assert response.status_code == 200
    found = timings(response.headers["server-timing"])
    assert list(found) == ["admit", "enqueue", "pickup", "prep", "upstream", "upstream-total", "total"]
    assert (found["upstream"], found["upstream-total"], found["prep"]) == (12.5, 20.0, 0.25)
    before_upstream = found["admit"] + found["enqueue"] + found["pickup"]
    assert 0 < before_upstream <= found["total"]


async def test_pickup_excludes_the_workers_own_preparation(ingress: Ingress) -> None:
    """``pickup`` is the queue wait less the worker's ``prep_ms``: a worker that reports a preparation
    longer than the whole wait (another clock, rounding) gives a pickup of 0, never a negative one."""
    request = ingress.chat_task()
    taken = await ingress.worker.take()
    await ingress.worker.start(taken, prep_ms=60_000.0)
    await ingress.worker.done(taken, "hi")
    response = await request
    found = timings(response.headers["server-timing"])
    assert found["pickup"] == 0.0 and found["prep"] == 60_000.0


async def test_a_stream_times_the_steps_to_its_first_content_in_its_headers(ingress: Ingress) -> None:
    """A stream's headers, sent with its first content, carry admission, enqueue, pick-up and the
    upstream's time to first byte as the ingress saw it, and no total."""
    request = ingress.chat_task(STREAM_BODY)
    taken = await ingress.worker.take()
    await ingress.worker.start(taken)
    await ingress.worker.chunk(taken, "hi")
    await ingress.worker.done(taken)
    response = await request
    assert response.status_code == 200
    found = timings(response.headers["server-timing"])
    assert list(found) == ["admit", "enqueue", "pickup", "upstream"]
    assert min(found.values()) >= 0


async def test_a_start_the_worker_held_for_content_counts_as_upstream_time(ingress: Ingress) -> None:
    """An S frame the worker held back to travel with the first content (its ``held_ms``) started the
    job that much earlier: the hold counts in the upstream's time to first byte, not in the pick-up."""
    request = ingress.chat_task(STREAM_BODY)
    taken = await ingress.worker.take()
    await ingress.worker.start(taken, held_ms=40.0)
    await ingress.worker.chunk(taken, "hi")
    await ingress.worker.done(taken)
    response = await request
    found = timings(response.headers["server-timing"])
    assert found["upstream"] >= 40.0 and found["pickup"] < 40.0
