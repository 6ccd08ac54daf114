"""Dispatching batch lines: one line whose job cannot be written fails alone."""

from __future__ import annotations

import orjson
import redis.asyncio as aredis

from ingress.batches.batch_run import BatchRun
from ingress.batches.dispatch import PlannedLine, dispatch
from ingress.batches.records import BatchRecord
from ingress.control import accounts
from shared import credits, keys
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
