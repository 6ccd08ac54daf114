"""A worker killed mid-job (SIGKILL) must not leave its client hanging: the ingress ends the response."""

from __future__ import annotations

import signal
import threading
import time

import openai
import pytest

from tests.e2e.running_system import RunningSystem, Service, SystemLauncher
from tests.waiting import eventually_sync

# A slow simulated model (10 tokens/s) so the kill lands mid-stream; a short liveness window.
CONFIG = """
worker_heartbeat_interval = 0.5
worker_dead_after = 2.0

[providers.slow]
kind = "simulated"
tokens_per_second = 10.0

[[models]]
id = "e2e/slow-lorem"
deployments = [{ provider = "slow", upstream_model = "lorem" }]
"""

PROMPT = [{"role": "user", "content": "Write a long text."}]
PROMPT_ERROR_WITHIN = 10.0  # seconds from the kill to the client's error: liveness window plus slack


def _only_worker(system: RunningSystem) -> Service:
    (worker,) = system.workers("slow")
    return worker


def _kill(worker: Service) -> float:
    """SIGKILL the worker process; the monotonic time of its death."""
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait()
    return time.monotonic()


def test_stream_gets_an_error_promptly_when_its_worker_dies(launch_fresh_system: SystemLauncher) -> None:
    """Killing the worker mid-stream ends the stream with a worker_lost error event within a few seconds."""
    system = launch_fresh_system(CONFIG, pools=["slow"])
    client = system.client(timeout=60)
    stream = client.chat.completions.create(
        model="e2e/slow-lorem", messages=PROMPT, stream=True, max_tokens=400
    )
    chunks = iter(stream)
    assert next(chunks).choices[0].delta.role == "assistant"
    next(chunks)
    killed_at = _kill(_only_worker(system))
    with pytest.raises(openai.APIError) as caught:
        for _ in chunks:
            pass
    assert time.monotonic() - killed_at < PROMPT_ERROR_WITHIN
    assert isinstance(caught.value.body, dict) and caught.value.body.get("code") == "worker_lost"


def test_non_stream_gets_503_promptly_when_its_worker_dies(launch_fresh_system: SystemLauncher) -> None:
    """Killing the worker during a non-stream request answers 503 service_unavailable / worker_lost."""
    system = launch_fresh_system(CONFIG, pools=["slow"])
    client = system.client(timeout=60)
    outcome: dict[str, BaseException | float] = {}

    def call() -> None:
        try:
            client.chat.completions.create(model="e2e/slow-lorem", messages=PROMPT, max_tokens=400)
        except openai.APIStatusError as exc:
            outcome["error"] = exc
        finally:
            outcome["ended"] = time.monotonic()

    caller = threading.Thread(target=call)
    caller.start()
    eventually_sync(lambda: system.started_jobs("slow"), within=15)
    killed_at = _kill(_only_worker(system))
    caller.join(30)
    error = outcome.get("error")
    assert isinstance(error, openai.APIStatusError), outcome
    assert error.status_code == 503
    body = error.response.json()["error"]
    assert body["type"] == "service_unavailable" and body["code"] == "worker_lost"
    assert error.response.headers["retry-after"] == "1"  # every 503 of a completion says when to retry
    ended = outcome["ended"]
    assert isinstance(ended, float) and ended - killed_at < PROMPT_ERROR_WITHIN
