"""The driver's first step with a new batch: validate its input file, hold its lines against the plan's
limit of lines queued in batches, and start it (``in_progress``) or fail it with ``errors.data[]``."""

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
    (input_file,) = await files.load_files(redis, [record.fields["input_file_id"]])
    if input_file is None:
        missing = LineError("input_file_missing", "The input file was deleted or expired.", line=None)
        return await _fail(redis, record, [missing])
    try:
        validation = await validate_file(
            storage,
            input_file.storage_key,
            size=input_file.size,
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


async def _fail(redis: aredis.Redis, record: BatchRecord, errors: list[LineError]) -> bool:
    data = orjson.dumps([e.to_json() for e in errors]).decode()
    await records.transition(
        redis, record.id, ("validating",), "failed", failed_at=int(time.time()), errors=data, total=0
    )
    return False
