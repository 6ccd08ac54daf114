"""Ending a batch early (cancelled, expired, out of credit, its account suspended): its remaining lines
fail instead of running.

Lines never dispatched are recorded as errors (``batch_cancelled``, ``batch_expired``,
``insufficient_quota``, ``account_suspended`` or ``input_file_missing``), :data:`CHUNK` per round so
that one 50,000-line batch does not stall the driver.  When cancelled, expired or suspended, lines still
waiting in their lane are taken back and fail the same way; lines a worker already started run to their
end.  Lines whose input can no longer be read fail without their ``custom_id``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Final

import redis.asyncio as aredis
from rq.job import Job

from ingress.batches.batch_run import BatchRun
from ingress.batches.storage import FileStorage
from shared import credits, keys
from shared.batch_lines import LineRef
from shared.settings import ModelEntry

CHUNK: Final = 1000
BATCH_EXPIRED: Final = "batch_expired"  # the ending of a batch whose window passed before every line ran
ACCOUNT_SUSPENDED: Final = "account_suspended"  # the ending of a suspended account's batches
INPUT_FILE_MISSING: Final = "input_file_missing"  # the ending of a batch whose input's content was lost
MESSAGES: Final = {
    "batch_cancelled": "The batch was cancelled before this line ran.",
    BATCH_EXPIRED: "The batch's completion window passed before this line ran.",
    "insufficient_quota": "The account ran out of credit before this line could run.",
    ACCOUNT_SUSPENDED: "The account was suspended before this line ran.",
    INPUT_FILE_MISSING: "The batch's input file is no longer stored: this line could not be read.",
}


async def wind_down(
    redis: aredis.Redis, run: BatchRun, storage: FileStorage, models: Mapping[str, ModelEntry]
) -> None:
    code = run.ending
    message = MESSAGES.get(code, "This line did not run.")
    failed: list[tuple[LineRef, str, str]] = []
    for attempt in run.retries:
        failed.append((LineRef(run.id, attempt.index, attempt.custom_id), code, message))
    run.retries = []
    while len(failed) < CHUNK:
        item = await run.next_line(storage, dict(models))
        if item is None:
            break
        failed.append((LineRef(run.id, run.cursor, item.custom_id), code, message))
        run.consume()
    if run.input_missing:  # the lines left cannot be read: they fail without their custom_id
        while len(failed) < CHUNK and run.cursor < run.total:
            failed.append((LineRef(run.id, run.cursor, ""), code, message))
            run.consume()
    if code in ("batch_cancelled", BATCH_EXPIRED, ACCOUNT_SUSPENDED):
        failed.extend(await _withdraw_queued(redis, run, code, message))
    if failed:
        if code == BATCH_EXPIRED and run.record.fields.get("ending") != BATCH_EXPIRED:
            await _note_expired(redis, run)
        await run.fail_lines(redis, failed, cursor=run.cursor)


async def _note_expired(redis: aredis.Redis, run: BatchRun) -> None:
    """Record on the batch that its window failed lines: only such a batch ends ``expired``.  One whose
    lines had all been dispatched when the window passed, and ran to their end, is ``completed``."""
    await redis.hsetnx(keys.batch_record(run.id), "ending", BATCH_EXPIRED)
    run.record = replace(run.record, fields={**run.record.fields, "ending": BATCH_EXPIRED})


async def _withdraw_queued(
    redis: aredis.Redis, run: BatchRun, code: str, message: str
) -> list[tuple[LineRef, str, str]]:
    attempts = list(run.inflight.values())
    if not attempts:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for attempt in attempts:
            pipe.lrem(keys.rq_queue_key(keys.batch_lane(attempt.pool)), 1, attempt.job_id)
        removed = await pipe.execute()
    withdrawn = [attempt for attempt, count in zip(attempts, removed, strict=True) if count]
    for attempt in withdrawn:
        del run.inflight[attempt.index]
        await credits.release(redis, attempt.reservation)
        await redis.delete(Job.key_for(attempt.job_id))
    return [(LineRef(run.id, a.index, a.custom_id), code, message) for a in withdrawn]
