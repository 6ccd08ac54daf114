"""``Server-Timing`` on completions: queue wait, upstream time to first byte and total on a JSON answer;
on a stream, what is known when its headers leave with the first content (no total)."""

from __future__ import annotations

import re

from tests.ingress.conftest import MESSAGES, MODEL, Ingress

STREAM_BODY = {"model": MODEL, "messages": MESSAGES, "stream": True}


def timings(header: str) -> dict[str, float]:
    """``name;dur=ms`` entries of a Server-Timing value."""
    found = dict(re.findall(r"(\w+);dur=([0-9.]+)", header))
    return {name: float(value) for name, value in found.items()}


async def test_a_json_answer_times_queue_upstream_and_total(ingress: Ingress) -> None:
    """A JSON answer's Server-Timing has the queue wait, the worker's upstream TTFB and the total."""
    request = ingress.chat_task()
    taken = await ingress.worker.take()
    await ingress.worker.start(taken)
    await ingress.worker.done(taken, "hi", timing={"ttfb_ms": 12.5, "upstream_ms": 20.0})
    response = await request
    assert response.status_code == 200
    found = timings(response.headers["server-timing"])
    assert set(found) == {"queue", "upstream", "total"}
    assert found["upstream"] == 12.5
    assert found["total"] >= found["queue"] >= 0


async def test_a_stream_times_queue_and_upstream_in_its_headers(ingress: Ingress) -> None:
    """A stream's headers, sent with its first content, carry the queue wait and the upstream's time to
    first byte as the ingress saw it, and no total."""
    request = ingress.chat_task(STREAM_BODY)
    taken = await ingress.worker.take()
    await ingress.worker.start(taken)
    await ingress.worker.chunk(taken, "hi")
    await ingress.worker.done(taken)
    response = await request
    assert response.status_code == 200
    found = timings(response.headers["server-timing"])
    assert set(found) == {"queue", "upstream"}
    assert found["queue"] >= 0 and found["upstream"] >= 0
