"""Routing, fallback and failure semantics end to end: real ingress and worker processes (two per pool),
the real Redis, OpenAI-compatible deployments on the simulated upstream over real sockets.

Each deployment's behaviour is its upstream model name (see ``bench.sim_behaviour``); pool ``a`` never
retries, so a failure there falls back at once, pool ``revived`` points at a port nothing listens on until
the breaker test starts an upstream there, pool ``capped`` has provider-wide caps, and pool ``deep`` has no
workers (its queue only fills).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
import pytest
import redis

from bench.sim_stats import Counter
from bench.upstream import UpstreamThread
from shared import keys
from tests.e2e.running_system import REPO, RunningSystem, SystemLauncher, free_port
from tests.waiting import eventually_sync

HELLO = [{"role": "user", "content": "Hello"}]
ADMIN_TOKEN = "e2e-admin-token-0123456789abcdef0123"
FIRST_TOKEN_TIMEOUT = 1.0  # pool a's
COOLDOWN = 4.0
THRESHOLD = 3
QUICKLY = 10.0  # "at once" on a shared, loaded machine: far below any timeout that could be involved

MODELS = {
    "e2e/a503": [("a", "sim?status=503"), ("b", "sim?tokens=5")],
    "e2e/ahang": [("a", "sim?hang"), ("b", "sim?tokens=5")],
    "e2e/down": [("a", "sim?status=503"), ("b", "sim?status=502")],
    "e2e/reject": [("a", "sim?status=400"), ("b", "sim?tokens=5")],
    "e2e/cut": [("a", "sim?tokens=20&cut=3"), ("b", "sim?tokens=5")],
    "e2e/flaky": [("revived", "sim?tokens=3"), ("b", "sim?tokens=3")],
    "e2e/slow": [("b", "sim?tokens=400&itl_ms=25")],
    "e2e/late": [("b", "sim?ttft_ms=5000&tokens=3")],
    "e2e/deep": [("deep", "sim")],
    "e2e/capped-slow": [("capped", "sim?tokens=100&itl_ms=20"), ("b", "sim?tokens=3")],
    "e2e/capped": [("capped", "sim?tokens=2"), ("b", "sim?tokens=2")],
}
CAPPED_PER_MINUTE = 3


def config(base_url: str, revived_url: str) -> str:
    catalog = "".join(
        f'\n[[models]]\nid = "{model}"\ndeployments = ['
        + ", ".join(f'{{ provider = "{p}", upstream_model = "{m}" }}' for p, m in deployments)
        + "]\n"
        for model, deployments in MODELS.items()
    )
    return f"""
worker_heartbeat_interval = 0.5
worker_dead_after = 3.0
queue_timeout = 5.0
admin_token = "{ADMIN_TOKEN}"

[breaker]
failure_threshold = {THRESHOLD}
window = 60.0
cooldown = {COOLDOWN}
open_set_refresh = 0.2

[providers.a]
kind = "openai"
base_url = "{base_url}"
retries = 0
[providers.a.timeouts]
connect = 2.0
first_token = {FIRST_TOKEN_TIMEOUT}
idle = 5.0
total = 30.0

[providers.b]
kind = "openai"
base_url = "{base_url}"

[providers.revived]
kind = "openai"
base_url = "{revived_url}"
retries = 0
[providers.revived.timeouts]
connect = 2.0

[providers.capped]
kind = "openai"
base_url = "{base_url}"
retries = 0
max_concurrency = 1
requests_per_minute = {CAPPED_PER_MINUTE}
cap_wait = 0.2

[providers.deep]
kind = "openai"
base_url = "{base_url}"
queue_limit = 2
{catalog}"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamThread]:
    with UpstreamThread() as running:
        yield running


@pytest.fixture(scope="module")
def revived_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def system(launch_system: SystemLauncher, upstream: UpstreamThread, revived_port: int) -> RunningSystem:
    revived_url = f"http://127.0.0.1:{revived_port}/v1"
    return launch_system(
        config(upstream.base_url, revived_url),
        pools=["a", "b", "revived", "capped"],
        workers_per_pool=2,
        concurrency=8,
    )


@pytest.fixture
def http(system: RunningSystem) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {system.api_key}"}
    with httpx.Client(base_url=system.origin, headers=headers, timeout=30.0) as client:
        yield client


def chat(http: httpx.Client, model: str, **body: object) -> httpx.Response:
    return http.post("/v1/chat/completions", json={"model": model, "messages": HELLO, **body})


def content_of(response: httpx.Response) -> str:
    return str(response.json()["choices"][0]["message"]["content"])


def sse_events(text: str) -> list[str]:
    return [line[6:] for line in text.split("\n\n") if line.startswith("data: ")]


def breakers(http: httpx.Client) -> dict[str, dict[str, object]]:
    response = http.get("/admin/breakers", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200, response.text
    return {row["deployment"]: row for row in response.json()["data"]}


def test_a_503_then_b_serves(http: httpx.Client) -> None:
    """A answers 503: the client gets B's answer, X-Provider b, and the decision names the fallback."""
    for stream in (False, True):
        response = chat(http, "e2e/a503", stream=stream)
        assert response.status_code == 200 and response.headers["x-provider"] == "b"
        decision = response.headers["x-automated-decision"]
        assert "strategy=priority" in decision and "fallbacks=1" in decision
    assert content_of(chat(http, "e2e/a503")) == "w0 w1 w2 w3 w4 "


def test_a_hangs_past_its_first_token_timeout_and_b_serves(http: httpx.Client) -> None:
    """A never answers: after A's first-token timeout the stream is served whole by B, no error in it."""
    started = time.monotonic()
    response = chat(http, "e2e/ahang", stream=True)
    assert response.status_code == 200 and response.headers["x-provider"] == "b"
    events = sse_events(response.text)
    assert events[-1] == "[DONE]" and not any('"error"' in e for e in events)
    assert FIRST_TOKEN_TIMEOUT <= time.monotonic() - started < FIRST_TOKEN_TIMEOUT + QUICKLY


def test_non_retryable_400_is_not_retried_elsewhere(http: httpx.Client, upstream: UpstreamThread) -> None:
    """A 400 from A is our 400 with A's header; B never sees the request."""
    before = upstream.stats.total(Counter.REQUESTS)
    response = chat(http, "e2e/reject")
    assert response.status_code == 400 and response.json()["error"]["code"] == "upstream_bad_request"
    assert response.headers["x-provider"] == "a"
    assert upstream.stats.total(Counter.REQUESTS) - before == 1


def test_stream_failing_after_its_first_token_ends_with_an_error_event(http: httpx.Client) -> None:
    """A cuts its stream after three tokens: the client keeps A's tokens, then an error event, no [DONE],
    and nothing from B."""
    response = chat(http, "e2e/cut", stream=True)
    assert response.status_code == 200 and response.headers["x-provider"] == "a"
    events = sse_events(response.text)
    assert "[DONE]" not in events
    error = orjson.loads(events[-1])["error"]
    assert set(error) == {"message", "type", "param", "code"}
    text = "".join(
        choice["delta"].get("content") or ""
        for event in events[:-1]
        for choice in orjson.loads(event)["choices"]
    )
    assert text == "w0 w1 w2 "


def test_both_down_is_a_fast_503_and_then_an_immediate_one(http: httpx.Client) -> None:
    """Both deployments failing: 503 with Retry-After quickly; once both breakers are open the ingress
    answers "All providers temporarily unavailable" without trying either."""

    def all_open_answer() -> httpx.Response | None:
        started = time.monotonic()
        response = chat(http, "e2e/down", stream=True)
        assert time.monotonic() - started < QUICKLY
        assert response.status_code == 503 and int(response.headers["retry-after"]) >= 1
        error = response.json()["error"]
        assert error["type"] == "service_unavailable"
        return response if error["code"] == "service_unavailable" else None

    # Each failed request counts against both breakers; once both are open and the ingress' copy of the
    # open set has caught up, the answer comes without trying either.
    response = eventually_sync(all_open_answer, within=QUICKLY, interval=0.2)
    assert response.json()["error"]["message"] == "All providers temporarily unavailable."
    assert 1 <= int(response.headers["retry-after"]) <= COOLDOWN + 1


def test_breaker_opens_stops_traffic_and_recovers_after_the_cooldown(
    http: httpx.Client, system: RunningSystem, revived_port: int
) -> None:
    """Connect errors at `revived` (two worker processes) open its breaker after THRESHOLD failures; while
    open it gets no traffic even though it is back; after the cooldown a probe closes it and it serves."""
    dep = "revived/sim?tokens=3"
    for _ in range(THRESHOLD):
        response = chat(http, "e2e/flaky")
        assert response.status_code == 200 and response.headers["x-provider"] == "b"
    assert breakers(http)[dep]["status"] == "open"
    cli = subprocess.run(
        [sys.executable, "-m", "cli", "breakers", "--json"],
        env=system.env,
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert {row["deployment"]: row["status"] for row in orjson.loads(cli.stdout)}[dep] == "open"
    with UpstreamThread(port=revived_port) as revived:
        # Open: neither the ingress (its copy of the open set) nor a revived worker (its own breaker check,
        # whichever sees it first) sends it a request.
        for _ in range(2):
            assert chat(http, "e2e/flaky").headers["x-provider"] == "b"
        assert revived.stats.total(Counter.REQUESTS) == 0
        eventually_sync(  # the breaker lets a probe through after the cooldown
            lambda: chat(http, "e2e/flaky").headers["x-provider"] == "revived",
            within=COOLDOWN + QUICKLY,
            interval=0.2,
        )
        assert revived.stats.total(Counter.REQUESTS) >= 1
        assert breakers(http)[dep]["status"] == "closed"
        assert breakers(http)[dep]["trips"] == 1


def test_deep_queue_sheds_load_with_503(http: httpx.Client, system: RunningSystem) -> None:
    """A pool whose queue is at its queue_limit gets no more jobs: 503 queue_full, Retry-After, at once."""
    client = redis.Redis.from_url(system.redis_url)
    try:
        client.rpush(keys.rq_queue_key("deep"), "waiting-1", "waiting-2")
        started = time.monotonic()
        response = chat(http, "e2e/deep")
        assert time.monotonic() - started < QUICKLY
        assert response.status_code == 503 and response.json()["error"]["code"] == "queue_full"
        assert response.headers["retry-after"] == "1"
        assert client.lrange(keys.rq_queue_key("deep"), 0, -1) == [b"waiting-1", b"waiting-2"]
    finally:
        client.delete(keys.rq_queue_key("deep"))
        client.close()


def wait_for_disconnects(upstream: UpstreamThread, at_least: int) -> None:
    eventually_sync(lambda: upstream.stats.total(Counter.CLIENT_DISCONNECTS) >= at_least, within=QUICKLY)


def test_client_leaving_a_stream_closes_the_upstream_connection(
    system: RunningSystem, upstream: UpstreamThread
) -> None:
    """A client that drops a long stream after its first chunk gets the upstream call cancelled."""
    before = upstream.stats.total(Counter.CLIENT_DISCONNECTS)
    headers = {"Authorization": f"Bearer {system.api_key}"}
    body = {"model": "e2e/slow", "messages": HELLO, "stream": True}
    with (
        httpx.Client(base_url=system.origin, headers=headers, timeout=30.0) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        next(response.iter_bytes())
    wait_for_disconnects(upstream, before + 1)


def test_client_leaving_a_json_request_closes_the_upstream_connection(
    system: RunningSystem, upstream: UpstreamThread
) -> None:
    """A non-stream client that gives up while the answer is generated gets the upstream call cancelled."""
    before = upstream.stats.total(Counter.CLIENT_DISCONNECTS)
    headers = {"Authorization": f"Bearer {system.api_key}"}
    with httpx.Client(base_url=system.origin, headers=headers, timeout=1.5) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/chat/completions", json={"model": "e2e/slow", "messages": HELLO})
    wait_for_disconnects(upstream, before + 1)


def test_client_leaving_before_the_first_token_closes_the_upstream_connection(
    system: RunningSystem, upstream: UpstreamThread
) -> None:
    """A stream client that gives up while the ingress still holds back the response (no token yet) gets
    the upstream call cancelled: the upstream sees the close, long before it would have answered."""
    before = upstream.stats.total(Counter.CLIENT_DISCONNECTS)
    headers = {"Authorization": f"Bearer {system.api_key}"}
    body = {"model": "e2e/late", "messages": HELLO, "stream": True}
    with httpx.Client(base_url=system.origin, headers=headers, timeout=0.5) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/chat/completions", json=body)
    wait_for_disconnects(upstream, before + 1)


def test_provider_wide_caps_hold_across_worker_processes(system: RunningSystem) -> None:
    """`capped` (two worker processes) runs one upstream call at a time and three per minute: of two
    concurrent streams one falls back to b; after three calls in the minute the rest go to b too."""
    headers = {"Authorization": f"Bearer {system.api_key}"}
    body = {"model": "e2e/capped-slow", "messages": HELLO, "stream": True}
    with httpx.Client(base_url=system.origin, headers=headers, timeout=30.0) as client:
        with ThreadPoolExecutor(max_workers=2) as pool:
            answers = list(pool.map(lambda _: client.post("/v1/chat/completions", json=body), range(2)))
        assert sorted(a.headers["x-provider"] for a in answers) == ["b", "capped"]
        assert all(sse_events(a.text)[-1] == "[DONE]" for a in answers)
        served_by = [chat(client, "e2e/capped").headers["x-provider"] for _ in range(CAPPED_PER_MINUTE)]
    assert served_by == ["capped"] * (CAPPED_PER_MINUTE - 1) + ["b"]
