"""Dispatching batch lines: a line that cannot run (its job cannot be written, its model left the catalog,
no provider it allows serves its model any more) fails alone, and its batch goes on."""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as aredis

from ingress.batches.attempts import Attempt
from ingress.batches.batch_run import BatchRun
from ingress.batches.dispatch import PlannedLine, dispatch
from ingress.batches.driver import BatchDriver
from ingress.batches.records import BatchRecord
from ingress.control import accounts
from ingress.open_set import OpenSetCache
from ingress.provider_preferences import ProviderPreferences
from ingress.routing import ModelRouter
from shared import credits, keys
from shared.breaker import CircuitBreaker
from shared.credits import Reservation
from shared.settings import settings_from_mapping

SETTINGS = settings_from_mapping({}, env={})


async def test_a_line_whose_job_cannot_be_written_fails_alone_and_releases_its_hold(
    store: aredis.Redis,
) -> None:
    """A body the serializer refuses (nested past its recursion limit) fails its own line with an error
    result, its credit hold released; the round goes on and the other line is dispatched."""
    account, _ = await accounts.create_account(store, SETTINGS, name="batcher")
    await credits.add_credit(store, account.id, 10_000_000, reason="test grant", actor="tests")
    entry = SETTINGS.models["aiorouter/echo"]
    run = BatchRun(BatchRecord({"id": "batch_t", "account_id": account.id, "status": "in_progress"}), "in")
    good = {"model": entry.id, "messages": [{"role": "user", "content": "hi"}]}
    bad = {**good, "extra": orjson.loads(b"[" * 300 + b"]" * 300)}
    planned = [
        PlannedLine(run, index, f"line-{index}", entry, entry.deployments[0], body, 1, True)
        for index, body in enumerate([bad, good])
    ]
    assert await dispatch(store, SETTINGS, planned, {}) == []
    assert list(run.inflight) == [1]
    assert await store.hkeys(keys.batch_inflight("batch_t")) == [b"1"]
    results = await store.hgetall(keys.batch_results("batch_t"))
    assert list(results) == [b"0"] and b"invalid_request" in results[b"0"]
    balance = await credits.get_balance(store, account.id)
    assert balance.reserved == run.inflight[1].reservation.amount
    assert int(await store.hget(keys.batch_record("batch_t"), "cursor")) == 2


async def test_a_line_to_run_again_whose_model_left_the_catalog_fails_and_the_batch_goes_on(
    store: aredis.Redis,
) -> None:
    """A lost line waiting to run again, whose model the catalog no longer has, fails ``model_not_found``
    (as its batch's unread lines of that model do) instead of holding back every later line of its
    batch until the window passes."""
    record = BatchRecord({"id": "batch_r", "account_id": "acct", "status": "in_progress", "total": "1"})
    run = BatchRun(record, "in", cursor=1)
    reservation = Reservation("res_1", "acct", 100, 0)
    run.retries.append(Attempt(0, "q0", "", "sim", 1, reservation, "gone/model", {}, 0.0))
    unused: Any = None  # a line that cannot run is neither routed nor read again
    driver = BatchDriver(SETTINGS, store, unused, unused, "retries")
    assert await driver._next(run, {}, SETTINGS.batches.lines_in_flight) is None
    assert run.retries == []
    result = orjson.loads((await store.hget(keys.batch_results("batch_r"), "0"))[1:])
    assert result["custom_id"] == "q0" and result["error"]["code"] == "model_not_found"


async def test_a_line_to_run_again_whose_providers_no_longer_serve_its_model_fails_alone(
    store: aredis.Redis,
) -> None:
    """A lost line runs again with its ``provider`` preferences; when no provider of its ``order`` serves
    its model any more (``allow_fallbacks`` false: the catalog changed since), that line fails with the
    routing's 400, and the driver goes on: the error no longer escapes the round and stalls every batch."""
    entry = SETTINGS.models["aiorouter/echo"]
    router = ModelRouter(
        SETTINGS.models, redis=store, open_set=OpenSetCache(CircuitBreaker(store, SETTINGS.breaker))
    )
    record = BatchRecord({"id": "batch_p", "account_id": "acct", "status": "in_progress", "total": "1"})
    run = BatchRun(record, "in", cursor=1)
    reservation = Reservation("res_2", "acct", 100, 0)
    strict = ProviderPreferences(("removed-provider",), False)  # the provider the catalog dropped since
    run.retries.append(Attempt(0, "q0", "", "removed-provider", 1, reservation, entry.id, {}, 0.0, strict))
    unused: Any = None  # no storage is read for a line to run again
    driver = BatchDriver(SETTINGS, store, unused, router, "retries")
    assert await driver._next(run, {}, SETTINGS.batches.lines_in_flight) is None
    assert run.retries == []
    result = orjson.loads((await store.hget(keys.batch_results("batch_p"), "0"))[1:])
    assert result["custom_id"] == "q0" and result["error"]["code"] == "invalid_value"
