"""The ingress killed with SIGKILL while its jobs run and wait in the queue: the workers stop those jobs
(nobody is left to read them) and release their holds: nobody received an answer, nobody pays."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import redis

from bench.upstream import UpstreamThread
from shared import keys
from tests.chaos.configs import slow_model_config
from tests.chaos.conftest import PrivateRedis, add_credit, balance, usage_records, wait_until
from tests.e2e.running_system import RunningSystem, SystemLauncher, _start, free_port

CONFIG = slow_model_config(
    """
worker_heartbeat_interval = 0.5
worker_dead_after = 3.0
"""
)
SLOTS = 3  # the worker runs three jobs; the others wait in the queue
REQUESTS = 6
MAX_TOKENS = 300  # 30 s per answer at 10 tokens/s: a job that ends within seconds was stopped
STOPPED_WITHIN = 15.0


def _queued(system: RunningSystem, pool: str = "slow") -> int:
    connection = redis.Redis.from_url(system.redis_url)
    try:
        return int(connection.llen(keys.rq_queue_key(pool)))
    finally:
        connection.close()


def _request(system: RunningSystem, stream: bool) -> None:
    """One request that the ingress' death cuts: its outcome does not matter here."""
    body = {
        "model": "chaos/slow",
        "messages": [{"role": "user", "content": "go"}],
        "max_tokens": MAX_TOKENS,
        "stream": stream,
    }
    _request_body(system, body)


def _request_body(system: RunningSystem, body: dict[str, object]) -> None:
    """Send ``body`` as a completion request and wait for whatever answer, or none."""
    try:
        with httpx.Client(timeout=90) as client:
            client.post(
                f"{system.base_url}/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {system.api_key}"},
            )
    except httpx.HTTPError:
        pass


def _call_in_threads(system: RunningSystem, streams: list[bool]) -> None:
    for stream in streams:
        threading.Thread(target=_request, args=(system, stream), daemon=True).start()


def test_jobs_of_a_killed_ingress_stop_and_release_their_holds(
    launch_chaos_system: SystemLauncher, private_redis: PrivateRedis
) -> None:
    """kill -9 of the ingress with three jobs running (streams and not) and three queued: within seconds
    no job runs or waits, no credit stays held or is charged, the usage records show the upstream
    produced far less than the full answers, and the queued jobs never called it."""
    system = launch_chaos_system(CONFIG, pools=["slow"], concurrency=SLOTS)
    add_credit(private_redis, "e2e", 100)
    _call_in_threads(system, [number % 2 == 0 for number in range(REQUESTS)])
    assert wait_until(
        lambda: len(system.started_jobs("slow")) == SLOTS and _queued(system) == REQUESTS - SLOTS, within=20
    )
    (ingress,) = [service for service in system.services if service.label == "ingress"]
    ingress.process.send_signal(signal.SIGKILL)
    ingress.process.wait()
    assert wait_until(
        lambda: not system.started_jobs("slow") and _queued(system) == 0, within=STOPPED_WITHIN
    ), f"jobs still running {system.started_jobs('slow')} or queued ({_queued(system)})"
    assert wait_until(lambda: balance(private_redis, "e2e").reserved == 0, within=5), balance(
        private_redis, "e2e"
    )
    records = usage_records(private_redis, "e2e")
    assert len(records) == REQUESTS and {record.status for record in records} == {"ingress_gone"}
    assert balance(private_redis, "e2e").spent == 0 == sum(record.cost_micros for record in records)
    assert sum(record.completion_tokens for record in records) < REQUESTS * MAX_TOKENS // 4
    never_ran = [record for record in records if record.completion_tokens == 0]
    assert len(never_ran) >= REQUESTS - SLOTS, "a queued job of the dead ingress called its upstream"


LEASE_CONFIG = CONFIG.replace(
    "worker_dead_after = 3.0\n", "worker_dead_after = 3.0\nqueue_timeout = 2.0\nreservation_lease = 3.0\n"
)
LEASE = 3.0
FIRST_HOLD = 2 * 2.0 + LEASE  # seconds a new hold lasts before its worker renews it (one attempt)
SWEEP_EVERY = 5.0
RELEASED_WITHIN = LEASE + SWEEP_EVERY + 5.0  # slack for a shared two-core box


def test_holds_whose_ingress_and_worker_both_died_are_released_within_a_lease(
    launch_chaos_system: SystemLauncher, private_redis: PrivateRedis
) -> None:
    """While its worker runs the job, a hold outlives its first deadline (the worker renews the lease);
    with the ingress and the worker both killed, the sweep of a surviving ingress releases it within
    one lease, not after the whole job's time limit."""
    system = launch_chaos_system(LEASE_CONFIG, pools=["slow"], concurrency=SLOTS)
    add_credit(private_redis, "e2e", 100)
    _call_in_threads(system, [True] * SLOTS)
    assert wait_until(lambda: len(system.started_jobs("slow")) == SLOTS, within=20)
    held = balance(private_redis, "e2e").reserved
    survivor = _start("ingress 2", ["ingress", "--port", str(free_port())], system.env, system.config.parent)
    system.services.append(survivor)  # its sweep runs all along; it is stopped with the rest
    time.sleep(FIRST_HOLD + SWEEP_EVERY)
    assert balance(private_redis, "e2e").reserved == held, "a running job's hold was swept"
    for service in system.services:
        if service is not survivor:
            service.process.send_signal(signal.SIGKILL)
            service.process.wait()
    killed_at = time.monotonic()
    assert wait_until(lambda: balance(private_redis, "e2e").reserved == 0, within=RELEASED_WITHIN), balance(
        private_redis, "e2e"
    )
    assert time.monotonic() - killed_at < RELEASED_WITHIN


SILENT_CONFIG = """
worker_heartbeat_interval = 0.5
worker_dead_after = 3.0

[providers.silent]   # accepts connections and never answers: a job waits for its first token
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"
api_key = "sk-none"
retries = 1

[providers.silent.timeouts]
first_token = 60.0

[[models]]
id = "chaos/silent"
input_price_per_m = 1.0
output_price_per_m = 2.0
deployments = [{{ provider = "silent", upstream_model = "any" }}]
"""


def test_a_job_waiting_on_a_silent_upstream_stops_when_its_ingress_dies(
    launch_chaos_system: SystemLauncher, private_redis: PrivateRedis
) -> None:
    """kill -9 of the ingress while its jobs wait for an upstream that sends nothing: no delta ever comes
    to stop them there, so the worker's heartbeat does, within two beats, not at the first-token deadline
    (a minute) nor after a retry of the call; their holds are released, nothing charged."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # the kernel completes the connections; nobody ever reads or answers
        system = launch_chaos_system(
            SILENT_CONFIG.format(port=silent.getsockname()[1]), pools=["silent"], concurrency=SLOTS
        )
        add_credit(private_redis, "e2e", 100)
        body = {"model": "chaos/silent", "messages": [{"role": "user", "content": "go"}]}
        for stream in (False, True):
            threading.Thread(
                target=_request_body, args=(system, {**body, "stream": stream}), daemon=True
            ).start()
        assert wait_until(lambda: len(system.started_jobs("silent")) == 2, within=20)
        (ingress,) = [service for service in system.services if service.label == "ingress"]
        ingress.process.send_signal(signal.SIGKILL)
        ingress.process.wait()
        assert wait_until(lambda: not system.started_jobs("silent"), within=STOPPED_WITHIN), (
            system.started_jobs("silent")
        )
        assert wait_until(lambda: balance(private_redis, "e2e").reserved == 0, within=5)
        records = usage_records(private_redis, "e2e")
        assert [record.status for record in records] == ["ingress_gone"] * 2
        assert balance(private_redis, "e2e").spent == 0


QUICK_CONFIG = CONFIG.replace("tokens_per_second = 10.0", "tokens_per_second = 20.0")
QUICK_TOKENS = 24  # 1.2 s per answer: some finish between the kill and the heartbeat that would see it


def test_answers_finished_after_their_ingress_died_are_not_charged(
    launch_chaos_system: SystemLauncher, private_redis: PrivateRedis
) -> None:
    """kill -9 of the ingress just before its JSON requests' answers are complete: a job that finishes
    before its worker's heartbeat sees the ingress gone publishes its answer to nobody, and its
    settlement (in the same transaction) finds nobody subscribed and releases the hold: nothing is
    charged, nothing stays held."""
    system = launch_chaos_system(QUICK_CONFIG, pools=["slow"], concurrency=SLOTS)
    add_credit(private_redis, "e2e", 100)
    body = {
        "model": "chaos/slow",
        "messages": [{"role": "user", "content": "go"}],
        "max_tokens": QUICK_TOKENS,
    }
    for _ in range(SLOTS):
        threading.Thread(target=_request_body, args=(system, body), daemon=True).start()
    assert wait_until(lambda: len(system.started_jobs("slow")) == SLOTS, within=20)
    time.sleep(QUICK_TOKENS / 20.0 - 0.4)  # the answers end about 0.4 s after the kill
    (ingress,) = [service for service in system.services if service.label == "ingress"]
    ingress.process.send_signal(signal.SIGKILL)
    ingress.process.wait()
    assert wait_until(lambda: not system.started_jobs("slow"), within=STOPPED_WITHIN)
    assert wait_until(lambda: balance(private_redis, "e2e").reserved == 0, within=5), balance(
        private_redis, "e2e"
    )
    records = usage_records(private_redis, "e2e")
    assert len(records) == SLOTS
    assert balance(private_redis, "e2e").spent == 0 == sum(record.cost_micros for record in records), records


UPSTREAM_CONFIG = """
worker_heartbeat_interval = 0.5
worker_dead_after = 3.0

[providers.sim]   # the simulated upstream over a socket: it counts the calls it receives
kind = "openai"
base_url = "{base_url}"
api_key = "sk-none"

[[models]]
id = "chaos/held"   # a stream of minutes, held until its client hangs up
input_price_per_m = 1.0
output_price_per_m = 2.0
deployments = [{{ provider = "sim", upstream_model = "sim?tokens=5000&itl_ms=20" }}]

[[models]]
id = "chaos/quick"
input_price_per_m = 1.0
output_price_per_m = 2.0
deployments = [{{ provider = "sim", upstream_model = "sim?tokens=5" }}]
"""
QUEUED = 5  # JSON requests of the ingress that dies, queued behind the survivor's streams


def _hold_stream(url: str, api_key: str, release: threading.Event) -> None:
    """Stream a ``chaos/held`` answer from the ingress at ``url`` and hang up once ``release`` is set."""
    body = {"model": "chaos/held", "messages": [{"role": "user", "content": "go"}], "stream": True}
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        with (
            httpx.Client(timeout=90) as client,
            client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as response,
        ):
            for _ in response.iter_bytes():
                if release.is_set():
                    return
    except httpx.HTTPError:
        pass


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_queued_jobs_of_a_killed_ingress_never_call_the_upstream(
    launch_chaos_system: SystemLauncher, private_redis: PrivateRedis
) -> None:
    """kill -9 of an ingress whose JSON requests wait in the queue behind another ingress' streams, so
    that no worker has seen it gone: as the slots free up, the worker takes its jobs and fails them
    unrun, the simulated upstream receives no call for any of them, their holds are released and
    nothing is charged."""
    with UpstreamThread() as upstream:
        system = launch_chaos_system(
            UPSTREAM_CONFIG.format(base_url=upstream.base_url), pools=["sim"], concurrency=SLOTS
        )
        add_credit(private_redis, "e2e", 100)
        survivor_url = f"http://127.0.0.1:{free_port()}"
        survivor = _start(
            "ingress 2",
            ["ingress", "--host", "127.0.0.1", "--port", survivor_url.rsplit(":", 1)[1]],
            system.env,
            system.config.parent,
        )
        system.services.append(survivor)  # stopped with the rest
        assert wait_until(lambda: _ready(survivor_url), within=30)
        release = threading.Event()
        holders = [
            threading.Thread(target=_hold_stream, args=(survivor_url, system.api_key, release), daemon=True)
            for _ in range(SLOTS)
        ]
        for holder in holders:
            holder.start()
        assert wait_until(lambda: len(system.started_jobs("sim")) == SLOTS, within=20)
        quick = {"model": "chaos/quick", "messages": [{"role": "user", "content": "go"}]}
        for _ in range(QUEUED):
            threading.Thread(target=_request_body, args=(system, quick), daemon=True).start()
        assert wait_until(lambda: _queued(system, "sim") == QUEUED, within=20)
        (ingress,) = [service for service in system.services if service.label == "ingress"]
        ingress.process.send_signal(signal.SIGKILL)
        ingress.process.wait()
        release.set()  # the survivor's clients hang up: their jobs stop, the slots free up
        assert wait_until(
            lambda: not system.started_jobs("sim") and _queued(system, "sim") == 0, within=STOPPED_WITHIN
        ), f"jobs still running {system.started_jobs('sim')} or queued ({_queued(system, 'sim')})"
        assert wait_until(lambda: balance(private_redis, "e2e").reserved == 0, within=5), balance(
            private_redis, "e2e"
        )
        assert upstream.stats.requests == SLOTS, "a queued job of the killed ingress called the upstream"
    records = [r for r in usage_records(private_redis, "e2e") if r.model == "chaos/quick"]
    assert len(records) == QUEUED
    assert {(r.status, r.completion_tokens, r.cost_micros) for r in records} == {("ingress_gone", 0, 0)}
