"""A client that goes away mid-stream cancels its job: the worker stops it and frees the slot."""

from __future__ import annotations

import httpx

from tests.e2e.running_system import SystemLauncher
from tests.waiting import eventually_sync

# 10 tokens/s: a 400-token answer would take 40 s, so a job that ends within seconds was cancelled.
CONFIG = """
worker_heartbeat_interval = 0.5
worker_dead_after = 3.0

[providers.slow]
kind = "simulated"
tokens_per_second = 10.0

[[models]]
id = "e2e/slow-lorem"
deployments = [{ provider = "slow", upstream_model = "lorem" }]
"""
CANCELLED_WITHIN = 10.0


def test_disconnect_mid_stream_stops_the_job(launch_system: SystemLauncher) -> None:
    """Closing the connection mid-stream removes the job from rq's started registry within seconds."""
    system = launch_system(CONFIG, pools=["slow"])
    body = {"model": "e2e/slow-lorem", "messages": [{"role": "user", "content": "go"}], "stream": True}
    headers = {"Authorization": f"Bearer {system.api_key}"}
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", f"{system.base_url}/chat/completions", json=body | {"max_tokens": 400}, headers=headers
        ) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data: {"))
        assert system.started_jobs("slow"), "the job should be running while we read"
    eventually_sync(
        lambda: not system.started_jobs("slow"), within=CANCELLED_WITHIN
    )  # the worker stops the job
    completion = system.client(timeout=30).chat.completions.create(
        model="e2e/slow-lorem", messages=[{"role": "user", "content": "go"}], max_tokens=3
    )
    assert completion.choices[0].finish_reason == "length"  # the pool still serves after the cancellation
