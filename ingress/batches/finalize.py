"""Finishing a batch: its result parts become the output and error files, then the batch ends.

The two files' ids are fixed in the record before anything is written, so a driver that dies half-way
writes the same files again.  Each line appears once: the parts hold each line's first result only (see
:mod:`shared.batch_lines`), and lines are still de-duplicated by number here.  Each line appears at
least once too: a line whose result is in no stored part (the storage lost that part) gets an error
line, :data:`RESULT_LOST`, named by the ``custom_id`` read again from the input.  The batch's
``request_counts`` are the two files' lines.  The final status comes last; then the batch's per-line
keys, its parts and its hold on the account's queued lines go.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Final

import orjson
import redis.asyncio as aredis

from ingress.batches import files, records
from ingress.batches.batch_run import part_key
from ingress.batches.expiry_policy import file_lifetime
from ingress.batches.input_lines import raw_lines
from ingress.batches.records import BatchRecord
from ingress.batches.storage import FileStorage
from shared import batch_lines, keys
from shared.batch_lines import LineRef
from shared.errors import NotFound
from shared.lua import LuaScript
from shared.settings import BatchSettings

log = logging.getLogger(__name__)

RELEASE_LINES = LuaScript.load("batch_release_lines")

# The status a batch ends in, by why its remaining lines failed ("" = they all ran).
_FINAL_STATUS = {"": "completed", "batch_expired": "expired", "batch_cancelled": "cancelled"}
RESULT_LOST: Final = "result_lost"  # the error of a line whose result the storage lost
RESULT_LOST_MESSAGE: Final = (
    "This line's result was lost by the file storage before the batch's files were written. Its request "
    "may have run (and been charged): running it again may run it twice."
)


async def finalize(
    redis: aredis.Redis, storage: FileStorage, record: BatchRecord, ending: str, bounds: BatchSettings
) -> None:
    batch_id = record.id
    ending = await _fix_ending(redis, batch_id, ending)
    if record.status == "in_progress":
        await records.transition(
            redis, batch_id, ("in_progress",), "finalizing", finalizing_at=int(time.time())
        )
    ids = await _file_ids(redis, batch_id)
    parts = record.number("parts")
    output, errors = await _write(redis, storage, record, ids, parts, bounds)
    status = _FINAL_STATUS.get(ending, "completed")
    now = int(time.time())
    fields: dict[str, str | int] = {f"{status}_at": now}
    fields["output_file_id"] = ids[0] if output else ""
    fields["error_file_id"] = ids[1] if errors else ""
    fields["completed"], fields["failed"] = output, errors  # a lost result counts as the error it is
    await records.transition(redis, batch_id, ("finalizing", "cancelling"), status, **fields)
    await cleanup(redis, storage, record)


async def cleanup(redis: aredis.Redis, storage: FileStorage, record: BatchRecord) -> None:
    """Drop a finished batch's working state (idempotent: a driver may repeat it after a crash), and its
    input file's content if that file was deleted while the batch ran."""
    for number in range(record.number("parts")):
        await storage.delete(part_key(record.id, number))
    input_file_id = record.fields.get("input_file_id")
    if input_file_id:
        await files.release_input(redis, storage, input_file_id, record.id)
    await RELEASE_LINES(redis, [keys.batch_queued_lines(record.account_id), keys.batch_record(record.id)], [])
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.batch_inflight(record.id), keys.batch_results(record.id), keys.batch_done(record.id))
        pipe.expire(keys.batch_record(record.id), keys.BATCH_RECORD_TTL)
        pipe.zrem(keys.BATCHES_ACTIVE, record.id)
        await pipe.execute()


async def _fix_ending(redis: aredis.Redis, batch_id: str, ending: str) -> str:
    """The ending seen when the batch first started finalizing (a later driver must not see it expire)."""
    record = keys.batch_record(batch_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hsetnx(record, "final_ending", ending or "none")
        pipe.hget(record, "final_ending")
        _, fixed = await pipe.execute()
    text = fixed.decode()
    return "" if text == "none" else text


async def _file_ids(redis: aredis.Redis, batch_id: str) -> tuple[str, str]:
    record = keys.batch_record(batch_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hsetnx(record, "pending_output_file_id", files.new_file_id())
        pipe.hsetnx(record, "pending_error_file_id", files.new_file_id())
        pipe.hmget(record, "pending_output_file_id", "pending_error_file_id")
        *_, (output, error) = await pipe.execute()
    return output.decode(), error.decode()


async def _write(
    redis: aredis.Redis,
    storage: FileStorage,
    record: BatchRecord,
    ids: tuple[str, str],
    parts: int,
    bounds: BatchSettings,
) -> tuple[int, int]:
    """Write the output and error files (each only if it has lines); their line counts."""
    counts = []
    seen: set[int] = set()
    for kind, file_id, suffix in (
        (batch_lines.OUTPUT, ids[0], "output"),
        (batch_lines.ERROR, ids[1], "error"),
    ):
        lines = (
            _lines_of(storage, record.id, parts, kind, seen)
            if kind == batch_lines.OUTPUT
            else _error_lines(storage, record, parts, seen)
        )
        count = 0

        async def counted(source: AsyncIterator[bytes] = lines) -> AsyncIterator[bytes]:
            nonlocal count
            async for line in source:
                count += 1
                yield line

        stored = await files.store_file(
            redis,
            storage,
            account_id=record.account_id,
            filename=f"{record.id}_{suffix}.jsonl",
            purpose=files.BATCH_OUTPUT,
            chunks=counted(),
            ttl=file_lifetime(record.number("output_expires_after") or None, bounds.file_ttl),
            file_id=file_id,
        )
        if count == 0:
            await files.delete_file(redis, storage, stored)
        counts.append(count)
    return counts[0], counts[1]


async def _lines_of(
    storage: FileStorage, batch_id: str, parts: int, kind: bytes, seen: set[int]
) -> AsyncIterator[bytes]:
    """The result lines of one kind from every part, each line number once (``seen`` spans both kinds).
    A part the storage lost (a deleted object, a volume not shared) is skipped with an error logged: the
    batch ends, its lines in that part failing (:func:`_lost_results`), rather than never ending, nor
    keeping every other batch of its driver from ending."""
    for number in range(parts):
        try:
            content = await storage.get(part_key(batch_id, number))
        except NotFound:
            if kind == batch_lines.OUTPUT:  # said once, not once per kind
                log.error(
                    "batch %s: result part %d is no longer stored; its results are lost", batch_id, number
                )
            continue
        for row in content.split(b"\n"):
            if not row or row[:1] != kind:
                continue
            index_text, _, line = row[1:].partition(b" ")
            index = int(index_text)
            if index in seen:
                continue
            seen.add(index)
            yield line + b"\n"


async def _error_lines(
    storage: FileStorage, record: BatchRecord, parts: int, seen: set[int]
) -> AsyncIterator[bytes]:
    """The error file's lines: the parts' own, then one for each line that no stored part holds (by then
    ``seen`` holds every line of both kinds that is stored)."""
    async for line in _lines_of(storage, record.id, parts, batch_lines.ERROR, seen):
        yield line
    async for line in _lost_results(storage, record, seen):
        yield line


async def _lost_results(storage: FileStorage, record: BatchRecord, seen: set[int]) -> AsyncIterator[bytes]:
    """A :data:`RESULT_LOST` error line for each line of the batch not in ``seen``.  Their ``custom_id``
    is read from the input, streamed (its content is held until the batch ends), only when a line is
    missing; lines the input no longer holds either (it was lost too) are named by number only."""
    total = record.number("total")
    missing = sum(1 for index in range(total) if index not in seen)
    if not missing:
        return
    log.error("batch %s: %d line(s) have no stored result; they end %s", record.id, missing, RESULT_LOST)
    index = 0  # the next line of the input
    try:
        async with aclosing(raw_lines(storage, files.storage_key(record.fields["input_file_id"]))) as lines:
            async for _, raw in lines:
                if index >= total:
                    break
                if index not in seen:
                    yield _lost_line(record.id, index, _custom_id(raw))
                    missing -= 1
                    if not missing:
                        return
                index += 1
    except NotFound:
        log.error("batch %s: its input is no longer stored either: lost lines have no custom_id", record.id)
    for rest in range(index, total):
        if rest not in seen:
            yield _lost_line(record.id, rest, "")


def _lost_line(batch_id: str, index: int, custom_id: str) -> bytes:
    ref = LineRef(batch_id, index, custom_id)
    return batch_lines.error_line(ref, RESULT_LOST, RESULT_LOST_MESSAGE) + b"\n"


def _custom_id(raw: bytes) -> str:
    """The ``custom_id`` of an input line (validated when the batch was created)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    custom_id = data.get("custom_id") if isinstance(data, dict) else None
    return custom_id if isinstance(custom_id, str) else ""
