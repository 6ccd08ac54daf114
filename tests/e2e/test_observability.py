"""The real system's observability: after one completion, the ingress' ``/metrics`` and the worker's
metrics port both show it, and the ingress' and the worker's JSON log lines join on its request id."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.e2e.running_system import RunningSystem, free_port
from tests.waiting import eventually_sync

TOKEN = "t" * 40
WORKER_METRICS_PORT = free_port()
CONFIG = f"""
worker_heartbeat_interval = 0.5
worker_dead_after = 3.0
metrics_token = "{TOKEN}"
log_format = "json"
worker_metrics_port = {WORKER_METRICS_PORT}

[providers.simulated]
kind = "simulated"

[[models]]
id = "aiorouter/echo"
deployments = [{{ provider = "simulated", upstream_model = "echo" }}]
"""


@pytest.fixture(scope="module")
def system(launch_system) -> RunningSystem:  # type: ignore[no-untyped-def]
    """One ingress and one worker process serving its metrics on a known port."""
    return launch_system(CONFIG, pools=["simulated"])


def complete_once(system: RunningSystem) -> httpx.Response:
    response = httpx.post(
        f"{system.origin}/v1/chat/completions",
        headers={"Authorization": f"Bearer {system.api_key}"},
        json={"model": "aiorouter/echo", "messages": [{"role": "user", "content": "one two"}]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response


def test_ingress_and_worker_metrics_show_a_completion(system: RunningSystem) -> None:
    """One answered request counts on the ingress' /metrics and as an ok job on the worker's port; its
    response carries Server-Timing."""
    response = complete_once(system)
    assert {"admit", "enqueue", "pickup", "prep", "upstream", "upstream-total", "total"} == {
        part.split(";")[0] for part in response.headers["server-timing"].split(", ")
    }
    ingress = httpx.get(f"{system.origin}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert ingress.status_code == 200
    assert (
        'aiorouter_requests_total{mode="json",model="aiorouter/echo",provider="simulated",status="200"} 1.0'
        in ingress.text
    )
    assert 'aiorouter_pool_workers_alive{pool="simulated"} 1.0' in ingress.text
    worker = httpx.get(f"http://127.0.0.1:{WORKER_METRICS_PORT}/metrics", timeout=10)
    assert worker.status_code == 200
    assert (
        'aiorouter_worker_jobs_total{model="aiorouter/echo",outcome="ok",pool="simulated"} 1.0' in worker.text
    )


def json_lines(text: str, logger: str) -> list[dict[str, object]]:
    """The JSON log lines of ``logger`` in a process' output."""
    lines = [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == logger]


def test_request_and_job_log_lines_join_on_the_request_id(system: RunningSystem) -> None:
    """The ingress logs one JSON request line and the worker one JSON job line with the same request id."""
    request_id = complete_once(system).headers["x-request-id"]
    (ingress,) = [s for s in system.services if s.label == "ingress"]
    (worker,) = system.workers("simulated")
    request = eventually_sync(
        lambda: [
            r for r in json_lines(ingress.log_text(), "aiorouter.request") if r["request_id"] == request_id
        ]
    )
    job = eventually_sync(
        lambda: [j for j in json_lines(worker.log_text(), "aiorouter.job") if j["request_id"] == request_id]
    )
    assert request[0]["status"] == 200 and job[0]["outcome"] == "ok"
    assert request[0]["job_id"] == job[0]["job_id"]
