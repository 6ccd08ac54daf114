"""What requests leave in Redis is bounded, in size and in time: a mixed workload runs through the real
ingress, workers and batch driver, and once the system settles every key in Redis is audited against the
lifetime shared.keys states for it (:mod:`tests.e2e.redis_audit`).

The mix: JSON and streamed completions; upstream errors (400, 503, a cut stream, bad JSON, a hang past
the first-token timeout); clients that leave mid-stream, while waiting, while queued; a request refused
by validation, one by the rate limit, one for credit, and requests shed by a full queue and by the queue
timeout; a paid request; a small batch run to its end and one cancelled midway, their files deleted; a
worker killed (SIGKILL) mid-job, then replaced.  The interactive part runs again: the keys that last
(one per account, key, pool, deployment) must come out of the second round as the first left them.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import redis

from bench.upstream import UpstreamThread
from shared import keys
from shared.settings import load_settings
from tests.e2e.redis_audit import (
    PER_REQUEST_BOUND,
    RULES,
    Pattern,
    all_keys,
    audit,
    classify,
    in_flight,
    patterns,
    per_request_bytes,
)
from tests.e2e.running_system import RunningSystem, SystemLauncher, _start
from tests.e2e.test_accounts_limits import ADMIN_TOKEN, new_account
from tests.e2e.test_batches import batch_file, jsonl, wait_final
from tests.waiting import eventually_sync

HELLO = [{"role": "user", "content": "Hello"}]
SETTLE_WITHIN = 30.0

MODELS = {  # model -> (provider, upstream model); the provider `up` is the simulated upstream over a socket
    "e2e/ok": ("up", "sim?tokens=5"),
    "e2e/e400": ("up", "sim?status=400"),
    "e2e/e503": ("up", "sim?status=503"),
    "e2e/cut": ("up", "sim?tokens=20&cut=3"),
    "e2e/bad-json": ("up", "sim?bad_json"),
    "e2e/hang": ("up", "sim?hang"),
    "e2e/slow": ("slow", "lorem"),
    "e2e/nobody": ("idle", "sim"),
}
PRICED = "e2e/priced"
VICTIM = "e2e/victim"
LONG = [{"role": "user", "content": "long " * 20_000}]  # 100 KB: what a failed request keeps is not it


def config(upstream: str, files: Path) -> str:
    catalog = "".join(
        f'\n[[models]]\nid = "{model}"\ndeployments = [{{ provider = "{p}", upstream_model = "{m}" }}]\n'
        for model, (p, m) in MODELS.items()
    )
    return f"""
worker_heartbeat_interval = 0.5
worker_dead_after = 2.0
queue_timeout = 2.0
key_cache_ttl = 1.0
reservation_lease = 2.0
admin_token = "{ADMIN_TOKEN}"

[breaker]
failure_threshold = 1000   # the errors of the mix must not open a breaker and change the next round

[batches]
storage_dir = "{files}"
poll_interval = 0.05

[plans.tiny]
requests_per_minute = 2
tokens_per_minute = 100000

[providers.up]
kind = "openai"
base_url = "{upstream}"
retries = 0
[providers.up.timeouts]
connect = 2.0
first_token = 1.0
idle = 2.0
total = 20.0

[providers.slow]
kind = "simulated"
tokens_per_second = 20.0

[providers.victim]
kind = "simulated"
tokens_per_second = 10.0

[providers.idle]   # no worker serves it: its requests wait for one until queue_timeout, one at most
kind = "simulated"
queue_limit = 1
{catalog}
[[models]]
id = "{PRICED}"
input_price_per_m = 1.0
output_price_per_m = 2.0
deployments = [{{ provider = "up", upstream_model = "sim?tokens=5" }}]

[[models]]
id = "{VICTIM}"
input_price_per_m = 1.0
output_price_per_m = 2.0
deployments = [{{ provider = "victim", upstream_model = "lorem" }}]
"""


# --- the system and its workload ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamThread]:
    with UpstreamThread() as running:
        yield running


@pytest.fixture(scope="module")
def system(
    launch_system: SystemLauncher, upstream: UpstreamThread, tmp_path_factory: pytest.TempPathFactory
) -> RunningSystem:
    files = tmp_path_factory.mktemp("files")
    return launch_system(
        config(upstream.base_url, files), pools=["up", "slow", "victim"], concurrency=8, batch_driver=True
    )


@dataclass(slots=True)
class Callers:
    """The API keys of the workload's accounts."""

    own: str  # the launch's key: business plan, free models only
    limited: str  # plan `tiny`: two requests a minute
    broke: str  # no credit
    payer: str  # enough credit


def post(secret: str, origin: str, body: dict[str, object], timeout: float = 30.0) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}"}
    return httpx.post(f"{origin}/v1/chat/completions", json=body, headers=headers, timeout=timeout)


def leave_mid_stream(secret: str, origin: str, model: str) -> str:
    """Open a stream, read its first event, hang up."""
    headers = {"Authorization": f"Bearer {secret}"}
    body = {"model": model, "messages": LONG, "stream": True, "max_tokens": 400}
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", f"{origin}/v1/chat/completions", json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        next(line for line in response.iter_lines() if line.startswith("data: {"))
    return "left"


def leave_while_waiting(secret: str, origin: str, model: str, timeout: float = 1.0) -> str:
    """Send a JSON request and give up before its answer; or the refusal that came first."""
    try:
        body = {"model": model, "messages": LONG, "max_tokens": 400}
        response = post(secret, origin, body, timeout=timeout)
    except httpx.ReadTimeout:
        return "left"
    return outcome(response)


def outcome(response: httpx.Response) -> str:
    """The status, and for a stream whether it ended with [DONE] or an error event."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return f"{response.status_code} {'done' if 'data: [DONE]' in response.text else 'error event'}"
    return str(response.status_code)


def interactive_round(system: RunningSystem, callers: Callers) -> dict[str, str]:
    """Completions of every kind at once; what each one ended with."""
    origin = system.origin

    def chat(secret: str, model: str, **body: object) -> Callable[[], str]:
        return lambda: outcome(post(secret, origin, {"model": model, "messages": HELLO} | body))

    calls: dict[str, Callable[[], str]] = {
        "json": chat(callers.own, "e2e/ok"),
        "stream": chat(callers.own, "e2e/ok", stream=True),
        "upstream 400": chat(callers.own, "e2e/e400"),
        "upstream 503": chat(callers.own, "e2e/e503", stream=True, messages=LONG),
        "cut stream": chat(callers.own, "e2e/cut", stream=True),
        "bad json": chat(callers.own, "e2e/bad-json"),
        "bad json stream": chat(callers.own, "e2e/bad-json", stream=True),
        "hang": chat(callers.own, "e2e/hang", messages=LONG),
        "hang stream": chat(callers.own, "e2e/hang", stream=True),
        "left mid-stream": lambda: leave_mid_stream(callers.own, origin, "e2e/slow"),
        "left waiting": lambda: leave_while_waiting(callers.own, origin, "e2e/slow"),
        "invalid": chat(callers.own, "e2e/ok", temperature=9),
        "no worker": chat(callers.own, "e2e/nobody"),  # one of the two is shed: the queue holds one
        "no worker either": chat(callers.own, "e2e/nobody", messages=LONG),
        "no credit": chat(callers.broke, PRICED),
        "paid": chat(callers.payer, PRICED, stream=True),
        **{f"limited {n}": chat(callers.limited, "e2e/ok") for n in range(3)},
    }
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = {name: pool.submit(call) for name, call in calls.items()}
        outcomes = {name: future.result() for name, future in futures.items()}
    limited = sorted(outcomes.pop(f"limited {n}") for n in range(3))
    outcomes["limited"] = " ".join(limited)  # which of the three is refused is a race
    outcomes["left queued"] = leave_while_waiting(callers.own, origin, "e2e/nobody", timeout=0.5)
    return outcomes


EXPECTED = {
    "json": "200",
    "stream": "200 done",
    "upstream 400": "400",
    "upstream 503": "503",
    "cut stream": "200 error event",
    "bad json": "500",
    "bad json stream": "500",
    "hang": "503",
    "hang stream": "503",
    "left mid-stream": "left",
    "left waiting": "left",
    "invalid": "400",
    "no worker": "503",
    "no worker either": "503",
    "left queued": "left",
    "no credit": "402",
    "paid": "200 done",
    "limited": "200 200 429",
}


def batch_round(system: RunningSystem) -> None:
    """A small batch run to its end and its output downloaded; a long one cancelled midway."""
    client = system.client()
    small = client.files.create(file=("small.jsonl", batch_file(5, model="e2e/ok")), purpose="batch")
    done = client.batches.create(
        input_file_id=small.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    long = client.files.create(file=("long.jsonl", batch_file(60, "e2e/slow", 20)), purpose="batch")
    cancelled = client.batches.create(
        input_file_id=long.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    eventually_sync(lambda: client.batches.retrieve(cancelled.id).status != "validating", within=30)
    assert client.files.delete(long.id).deleted  # its content stays while the batch reads it
    client.batches.cancel(cancelled.id)
    finished = wait_final(client, done.id)
    assert finished.status == "completed", finished
    assert len(jsonl(client, finished.output_file_id)) == 5
    assert wait_final(client, cancelled.id).status == "cancelled"
    for file_id in (small.id, finished.output_file_id):
        assert file_id is not None and client.files.delete(file_id).deleted


def kill_mid_job(system: RunningSystem, secret: str) -> None:
    """SIGKILL the victim pool's worker mid-stream (a paid request: its credit is held), then start its
    replacement, as a supervisor would."""
    (worker,) = system.workers("victim")
    stream = system.client(secret, timeout=60).chat.completions.create(
        model=VICTIM, messages=[{"role": "user", "content": "Hello"}], stream=True, max_tokens=400
    )
    chunks = iter(stream)
    next(chunks)
    next(chunks)
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait()
    with pytest.raises(openai.APIError, match="worker"):
        for _ in chunks:
            pass
    started = keys.rq_started_registry("victim")
    with redis.Redis.from_url(system.redis_url) as client:  # the dead worker's entry lapses, then rq fails it
        eventually_sync(lambda: not client.zrangebyscore(started, time.time(), "+inf"), within=30)
    replacement = _start("worker victim #2", ["worker", "--pool", "victim"], system.env, worker.log.parent)
    system.services.append(replacement)  # stopped with the system


def settle(client: redis.Redis, table: list[Pattern]) -> None:
    """Wait until no key of work in flight is left: queues drained, jobs ended, batches finalized, holds
    settled or released."""
    try:
        eventually_sync(lambda: not in_flight(client, table), within=SETTLE_WITHIN, interval=0.2)
    except AssertionError:
        raise AssertionError(f"left in flight (key: TTL): {in_flight(client, table)}") from None


def test_every_described_key_has_a_rule() -> None:
    """Each key shared.keys describes has a rule in the audit, and every rule names a described key."""
    described = {spec.name or spec.pattern for spec in keys.described_keys()}
    assert described - RULES.keys() == set()
    assert RULES.keys() - described == set()


def test_the_audit_flags_each_kind_of_leak(clean_redis: redis.Redis) -> None:
    """A key no rule covers, a per-request key without a TTL or past its bound, an oversized record, a key
    of work in flight, and a finished job kept past result_ttl: each is reported by name."""
    settings = load_settings(None, env={})
    clean_redis.set("aior:nobody:knows", 1)
    clean_redis.set(keys.cancelled_marker("forever"), 1)
    clean_redis.set(keys.cancelled_marker("too-long"), 1, ex=keys.CANCELLED_MARKER_TTL + 100)
    clean_redis.set(keys.cancelled_marker("fine"), 1, ex=keys.CANCELLED_MARKER_TTL)
    clean_redis.hset("rq:job:big", "data", "x" * 3 * PER_REQUEST_BOUND)
    clean_redis.expire("rq:job:big", 10)
    clean_redis.hset("rq:job:done", "status", "finished")
    clean_redis.expire("rq:job:done", settings.failure_ttl)
    clean_redis.zadd(keys.CREDIT_RESERVATIONS, {"res": 1})
    clean_redis.zadd(keys.account_files("acct"), {"file-gone": 1})
    problems, _ = audit(clean_redis, settings, patterns())
    flagged = sorted(line.split(" ")[0].rstrip(":") for line in problems)
    assert flagged == sorted(
        [
            "aior:nobody:knows",
            keys.cancelled_marker("forever"),
            keys.cancelled_marker("too-long"),
            "rq:job:big",
            "rq:job:done",
            keys.CREDIT_RESERVATIONS,
            keys.account_files("acct"),
        ]
    ), problems


def test_what_a_mixed_workload_leaves_in_redis_is_bounded(system: RunningSystem) -> None:
    """Every key the mix leaves keeps its documented bound (a TTL within it, gone once idle, or one per
    account, key, pool, deployment or file with its cap), each ended request takes at most 8 KiB, and a
    second round grows no lasting key."""
    settings = load_settings(system.config, env={})
    table = patterns()
    callers = Callers(
        own=system.api_key,
        limited=new_account(system, "limited", "tiny"),
        broke=new_account(system, "broke", "business"),
        payer=new_account(system, "payer", "business", 10**9),
    )
    assert interactive_round(system, callers) == EXPECTED
    batch_round(system)
    kill_mid_job(system, callers.payer)
    with redis.Redis.from_url(system.redis_url) as client:
        settle(client, table)
        problems, lasting = audit(client, settings, table)
        assert problems == [], "\n".join(problems)
        assert {classify(key, table) is not None for key in all_keys(client)} == {True}

        again = interactive_round(system, callers)
        assert "429" in again.pop("limited")  # what the plan refilled since the first round is a race
        assert again == {name: seen for name, seen in EXPECTED.items() if name != "limited"}
        settle(client, table)
        problems, lasting_again = audit(client, settings, table)
        assert problems == [], "\n".join(problems)
        assert lasting_again == lasting
        assert max(per_request_bytes(client).values()) <= PER_REQUEST_BOUND
