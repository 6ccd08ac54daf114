"""Batches and the account's plan, end to end: lines pay the plan's batch price and hold credit like
interactive requests, do not count against the per-minute request limit, and a plan bounds the lines
its unfinished batches hold; an account out of credit gets insufficient_quota for the rest, and a
suspended account's batch ends with account_suspended."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator

import openai
import pytest
import redis.asyncio as aredis

from cli.key_issuing import issue_key
from ingress.batches import records
from ingress.control import accounts
from shared import credits, keys
from shared.settings import load_settings
from tests.chaos.conftest import wait_until
from tests.e2e.running_system import RunningSystem, SystemLauncher
from tests.e2e.test_batches import FINISH_WITHIN, batch_file, jsonl, wait_final

CONFIG = """
worker_heartbeat_interval = 0.5
worker_dead_after = 2.0
key_cache_ttl = 1.0

[batches]
storage_dir = "{files}"
poll_interval = 0.05
lines_in_flight = 4

[plans.tiny]
requests_per_minute = 2
batch_queued_lines = 500
batch_price_factor = 0.5

[providers.simulated]
kind = "simulated"

[providers.slowsim]
kind = "simulated"
tokens_per_second = 10.0

[[models]]
id = "e2e/priced"
input_price_per_m = 10.0
output_price_per_m = 10.0
deployments = [{{ provider = "simulated", upstream_model = "echo" }}]

[[models]]
id = "e2e/slow-priced"
input_price_per_m = 10.0
output_price_per_m = 10.0
deployments = [{{ provider = "slowsim", upstream_model = "lorem" }}]
"""

MODEL = "e2e/priced"


@pytest.fixture(scope="module")
def system(
    launch_system: SystemLauncher, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSystem]:
    files = tmp_path_factory.mktemp("files")
    yield launch_system(CONFIG.format(files=files), pools=["simulated", "slowsim"], batch_driver=True)


def _account(system: RunningSystem, account_id: str, credit_micros: int) -> tuple[str, credits.Balance]:
    """A key on a new account of the tiny plan holding ``credit_micros``."""

    async def make() -> tuple[str, credits.Balance]:
        client = aredis.Redis.from_url(system.redis_url)
        try:
            settings = load_settings(system.config, env={})
            issued = await issue_key(client, settings, account_id=account_id, plan="tiny", name=account_id)
            balance, _ = await credits.add_credit(client, account_id, credit_micros, reason="test")
            return issued.secret, balance
        finally:
            await client.aclose()

    return asyncio.run(make())


def _balance(system: RunningSystem, account_id: str) -> credits.Balance:
    async def read() -> credits.Balance:
        client = aredis.Redis.from_url(system.redis_url)
        try:
            return await credits.get_balance(client, account_id)
        finally:
            await client.aclose()

    return asyncio.run(read())


def _run(
    system: RunningSystem, key: str, content: bytes
) -> tuple[object, list[dict[str, object]], list[dict[str, object]]]:
    client = system.client(api_key=key)
    uploaded = client.files.create(file=("in.jsonl", content), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_final(client, batch.id)
    return done, jsonl(client, done.output_file_id), jsonl(client, done.error_file_id)


def test_lines_are_not_rate_limited_and_pay_the_batch_price(system: RunningSystem) -> None:
    """20 lines on a 2-requests-per-minute plan all complete, each charged half an interactive request."""
    key, _ = _account(system, "rich", 10_000_000)
    done, outputs, errors = _run(system, key, batch_file(20, model=MODEL))
    assert done.status == "completed" and len(outputs) == 20 and errors == []
    batch_spent = _balance(system, "rich").spent
    body = outputs[0]["response"]["body"]  # type: ignore[index]
    usage = body["usage"]
    full = credits.price_micros(usage["prompt_tokens"], 10.0) + credits.price_micros(
        usage["completion_tokens"], 10.0
    )
    assert batch_spent <= 20 * (full // 2 + 2) and batch_spent >= 20 * (full // 2 - 1)
    assert _balance(system, "rich").reserved == 0


def test_out_of_credit_fails_the_rest_with_insufficient_quota(system: RunningSystem) -> None:
    """An account that can pay a few lines gets answers for some and insufficient_quota for the rest,
    every custom_id once, and never spends more than it had."""
    key, granted = _account(system, "poor", 600)
    done, outputs, errors = _run(system, key, batch_file(25, model=MODEL))
    assert done.status == "completed"
    ids = sorted(str(line["custom_id"]) for line in outputs + errors)
    assert ids == sorted(f"req-{n}" for n in range(25))
    assert outputs and errors
    assert all(e["error"]["code"] == "insufficient_quota" for e in errors)  # type: ignore[index]
    balance = _balance(system, "poor")
    assert balance.spent <= granted.balance and balance.reserved == 0


def test_the_plan_bounds_lines_queued_in_batches(system: RunningSystem) -> None:
    """A batch of more lines than the plan's batch_queued_lines fails before anything runs."""
    key, _ = _account(system, "big", 10_000_000)
    done, outputs, _ = _run(system, key, batch_file(501, model=MODEL))
    assert done.status == "failed" and outputs == []
    assert [e.code for e in done.errors.data] == ["queued_lines_limit_exceeded"]  # type: ignore[attr-defined]


def test_a_small_batch_is_not_stuck_behind_a_large_one(system: RunningSystem) -> None:
    """With 4 lines in flight per pool, one account's 20-line batch created after another account's
    200-line batch finishes while most of the large one is still to run: the lane's room is dealt
    round-robin across accounts, not first come first served."""
    big_key, _ = _account(system, "big-batcher", 100_000_000)
    small_key, _ = _account(system, "small-batcher", 100_000_000)
    big_client, small_client = system.client(api_key=big_key), system.client(api_key=small_key)
    big_file = big_client.files.create(file=("big.jsonl", batch_file(200, model=MODEL)), purpose="batch")
    small_file = small_client.files.create(file=("small.jsonl", batch_file(20, model=MODEL)), purpose="batch")
    big = big_client.batches.create(
        input_file_id=big_file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    small = small_client.batches.create(
        input_file_id=small_file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_final(small_client, small.id)
    assert done.status == "completed"
    progress = big_client.batches.retrieve(big.id)
    assert progress.request_counts is not None and progress.request_counts.completed < 100, progress
    assert wait_final(big_client, big.id).status == "completed"


def _set_status(system: RunningSystem, account_id: str, status: str) -> None:
    async def update() -> None:
        client = aredis.Redis.from_url(system.redis_url)
        try:
            await accounts.update_account(
                client, load_settings(system.config, env={}), account_id, status=status
            )
        finally:
            await client.aclose()

    asyncio.run(update())


def test_a_suspended_account_is_refused_and_its_batch_ends(system: RunningSystem) -> None:
    """Suspended while its 200-line batch runs, an account gets 401 account_suspended from the Batches
    API, and the batch ends without running the rest: every custom_id once, the lines not run failed
    with account_suspended, nothing held.  Reactivated, the account reads its results."""
    key, _ = _account(system, "suspended-batcher", 100_000_000)
    client = system.client(api_key=key)
    uploaded = client.files.create(file=("in.jsonl", batch_file(200, model=MODEL)), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    _set_status(system, "suspended-batcher", "suspended")
    with pytest.raises(openai.AuthenticationError) as caught:
        client.batches.retrieve(batch.id)
    assert caught.value.code == "account_suspended"
    assert wait_until(lambda: _status(system, batch.id) == "completed", within=FINISH_WITHIN)
    _set_status(system, "suspended-batcher", "active")
    done = client.batches.retrieve(batch.id)
    outputs, errors = jsonl(client, done.output_file_id), jsonl(client, done.error_file_id)
    assert sorted(str(line["custom_id"]) for line in outputs + errors) == sorted(
        f"req-{n}" for n in range(200)
    )
    assert len(outputs) < 100 and errors
    assert {e["error"]["code"] for e in errors} == {"account_suspended"}  # type: ignore[index]
    assert _balance(system, "suspended-batcher").reserved == 0


def _status(system: RunningSystem, batch_id: str) -> str:
    """The batch's status as the driver left it in Redis (its API refuses a suspended account)."""

    async def read() -> str:
        client = aredis.Redis.from_url(system.redis_url)
        try:
            (record,) = await records.load_batches(client, [batch_id])
            return record.status if record is not None else ""
        finally:
            await client.aclose()

    return asyncio.run(read())


def test_lines_of_a_worker_paused_past_its_liveness_are_run_again_and_charged_once(
    system: RunningSystem,
) -> None:
    """The worker running 4 slow lines is stopped (SIGSTOP) until the driver gives its lines up as lost
    and queues them again, then resumed: its late answers are refused (their holds were released), the
    lines' second runs answer them, and the account pays each line once; the finished batch leaves no
    results hash behind."""
    key, _ = _account(system, "paused-batcher", 100_000_000)
    client = system.client(api_key=key)
    body = batch_file(4, model="e2e/slow-priced", max_tokens=20)  # ~2 s a line at 10 tokens/s
    uploaded = client.files.create(file=("in.jsonl", body), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    (worker,) = system.workers("slowsim")
    lane = keys.rq_queue_key(keys.batch_lane("slowsim"))
    assert wait_until(lambda: _balance(system, "paused-batcher").reserved > 0, within=FINISH_WITHIN)
    assert wait_until(lambda: _read(system, "llen", lane) == 0, within=FINISH_WITHIN)  # all 4 taken
    worker.process.send_signal(signal.SIGSTOP)
    try:  # the driver sees the worker dead, gives its 4 lines up and queues them again
        assert wait_until(lambda: _read(system, "llen", lane) == 4, within=FINISH_WITHIN)
    finally:
        worker.process.send_signal(signal.SIGCONT)
    done = wait_final(client, batch.id)
    outputs, errors = jsonl(client, done.output_file_id), jsonl(client, done.error_file_id)
    assert done.status == "completed" and len(outputs) == 4 and errors == [], (outputs, errors)
    usages = [line["response"]["body"]["usage"] for line in outputs]  # type: ignore[index]
    owed = sum(
        credits.price_micros(u["prompt_tokens"], 5.0) + credits.price_micros(u["completion_tokens"], 5.0)
        for u in usages
    )
    assert wait_until(lambda: _balance(system, "paused-batcher").reserved == 0, within=FINISH_WITHIN)
    assert abs(_balance(system, "paused-batcher").spent - owed) <= 4  # each line once, to the micro-USD
    assert wait_until(lambda: worker.log_text().count("outcome=ok") >= 8, within=FINISH_WITHIN)
    assert _read(system, "exists", keys.batch_results(batch.id)) == 0


def _read(system: RunningSystem, command: str, key: str) -> int:
    """A Redis count (``llen``, ``exists``...) of ``key``, read now."""

    async def read() -> int:
        client = aredis.Redis.from_url(system.redis_url)
        try:
            return int(await getattr(client, command)(key))
        finally:
            await client.aclose()

    return asyncio.run(read())
