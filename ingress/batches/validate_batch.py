"""The driver's first step with a new batch: validate its input file, hold its lines against the plan's
limit of lines queued in batches, and start it (``in_progress``) or fail it with ``errors.data[]``.

The batch reads its input's content, which it holds from its creation (:func:`files.hold_input`), not
the file's record: a file deleted (or expired) while its batch validates is gone for clients, but the
batch runs to its end, as one deleted while the batch runs does.  Only content the storage lost fails
it (``input_file_missing``)."""

from __future__ import annotations

import time

import orjson
import redis.asyncio as aredis

from ingress.batches import files, records
from ingress.batches.input_lines import LineError, validate_file
from ingress.batches.records import BatchRecord
from ingress.batches.storage import FileStorage
from ingress.control import accounts
from shared import keys
from shared.errors import NotFound
from shared.lua import LuaScript
from shared.settings import Plan, Settings

ADMIT_LINES = LuaScript.load("batch_admit_lines")


async def account_plan(redis: aredis.Redis, settings: Settings, account_id: str) -> Plan:
    account = await accounts.get_account(redis, account_id)
    name = account.plan if account is not None and account.plan in settings.plans else settings.default_plan
    return settings.plans[name]


async def validate_batch(
    redis: aredis.Redis, storage: FileStorage, settings: Settings, record: BatchRecord
) -> bool:
    """Validate and start ``record``; False when it failed instead."""
    input_file_id = record.fields["input_file_id"]
    try:
        validation = await validate_file(
            storage,
            files.storage_key(input_file_id),
            size=await _input_size(redis, record),
            endpoint=record.fields["endpoint"],
            models=settings.models,
            bounds=settings.batches,
            max_body_bytes=settings.max_body_bytes,
        )
    except NotFound:  # the storage lost the content
        missing = LineError("input_file_missing", "The input file's content is no longer stored.", line=None)
        return await _fail(redis, record, [missing])
    if validation.errors:
        return await _fail(redis, record, validation.errors)
    plan = await account_plan(redis, settings, record.account_id)
    await redis.hset(keys.batch_record(record.id), "total", validation.total)
    held = await ADMIT_LINES(
        redis,
        [keys.batch_queued_lines(record.account_id), keys.batch_record(record.id)],
        [validation.total, plan.batch_queued_lines],
    )
    if not held:
        message = (
            f"The account's unfinished batches would hold more than its plan's {plan.batch_queued_lines} "
            "lines; wait for some to finish."
        )
        return await _fail(redis, record, [LineError("queued_lines_limit_exceeded", message, line=None)])
    return await records.transition(
        redis,
        record.id,
        ("validating",),
        "in_progress",
        in_progress_at=int(time.time()),
        model=validation.model,
    )


async def _input_size(redis: aredis.Redis, record: BatchRecord) -> int:
    """The input's size in bytes: the batch's own copy (``input_bytes``, written as it was created), or for
    a batch created before it was kept, the file's record (0 once that is gone: the lines are still
    bounded by ``max_lines`` and each line's size)."""
    if record.fields.get("input_bytes"):
        return record.number("input_bytes")
    (input_file,) = await files.load_files(redis, [record.fields["input_file_id"]])
    return 0 if input_file is None else input_file.size


async def _fail(redis: aredis.Redis, record: BatchRecord, errors: list[LineError]) -> bool:
    data = orjson.dumps([e.to_json() for e in errors]).decode()
    await records.transition(
        redis, record.id, ("validating",), "failed", failed_at=int(time.time()), errors=data, total=0
    )
    return False
