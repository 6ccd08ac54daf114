"""One batch as the driver runs it: its lines in flight, its next lines, and its collected results.

Durable progress lives in Redis (the record's ``cursor``, the in-flight hash, the results hash, the done
bitmap) and in storage (result parts); this object only caches it, and is rebuilt from them by a driver
that starts (or takes over from one killed with -9).  :meth:`collect` moves results from Redis into one
storage part at a time: the part is written first, then one transaction removes its lines from Redis,
marks them done and counts them, so a crash between the two rewrites the same part with more lines.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import redis.asyncio as aredis

from ingress.batches.attempts import Attempt
from ingress.batches.input_lines import BatchLine, LineError, parse_line, raw_lines
from ingress.batches.records import BatchRecord
from ingress.batches.storage import FileStorage
from shared import batch_lines, credits, keys
from shared.batch_lines import LineRef
from shared.errors import NotFound
from shared.settings import ModelEntry

LOST_CHECK_INTERVAL = 1.0  # seconds between two looks for lost lines of one batch
PART_EVERY = 1.0  # seconds between two storage parts of one batch, unless PART_LINES results wait
PART_LINES = 256


def part_key(batch_id: str, number: int) -> str:
    return f"batches/{batch_id}/part-{number:06d}"


async def _one(chunk: bytes) -> AsyncIterator[bytes]:
    yield chunk


@dataclass(slots=True)
class BatchRun:
    record: BatchRecord
    input_key: str
    inflight: dict[int, Attempt] = field(default_factory=dict)
    retries: list[Attempt] = field(default_factory=list)  # lost lines waiting to run again
    cursor: int = 0  # the next line never dispatched
    held: BatchLine | None = None  # read from the file, not dispatched yet
    reader: AsyncIterator[tuple[int, bytes]] | None = None
    read: int = 0  # lines the reader has yielded
    last_lost_check: float = 0.0
    out_of_lane_since: dict[str, float] = field(default_factory=dict)  # job id -> first look (lost_lines)
    last_part: float = 0.0
    finished: set[int] = field(default_factory=set)  # lines with a result not yet moved to storage
    input_missing: bool = False  # the input's content is no longer stored: the lines not yet read fail

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def account_id(self) -> str:
        return self.record.account_id

    @property
    def total(self) -> int:
        return self.record.number("total")

    @property
    def ending(self) -> str:
        """Why the remaining lines fail instead of running ("" while the batch runs normally)."""
        if self.record.status == "cancelling":
            return "batch_cancelled"
        if self.record.fields.get("ending"):
            return self.record.fields["ending"]
        if time.time() >= int(self.record.fields["expires_at"]):
            return "batch_expired"
        return ""

    @classmethod
    async def load(cls, redis: aredis.Redis, record: BatchRecord, input_key: str) -> BatchRun:
        raw = await redis.hgetall(keys.batch_inflight(record.id))
        inflight = {int(k): Attempt.from_wire(int(k), _bytes(v)) for k, v in raw.items()}
        return cls(record, input_key, inflight, cursor=record.number("cursor"))

    async def next_line(
        self, storage: FileStorage, models: dict[str, ModelEntry]
    ) -> BatchLine | LineError | None:
        """The next line never dispatched (kept until :meth:`consume`), or None past the last."""
        if self.held is not None:
            return self.held
        if self.cursor >= self.total:
            return None
        if self.reader is None:
            self.reader = raw_lines(storage, self.input_key)
            self.read = 0
        while self.read <= self.cursor:
            try:
                item = await anext(self.reader, None)
            except NotFound:
                self.input_missing = True
                self.reader = None
                return None
            if item is None:
                return None
            number, raw = item
            self.read += 1
            if self.read - 1 < self.cursor:
                continue
            try:
                self.held = parse_line(
                    raw,
                    index=self.cursor,
                    number=number,
                    endpoint=self.record.fields["endpoint"],
                    models=models,
                )
            except LineError as exc:  # validated when the batch was created: the catalog changed since
                return exc
            return self.held
        return None

    def consume(self) -> None:
        """The held line was dispatched (or failed): move past it."""
        self.held = None
        self.cursor += 1

    def in_flight(self) -> list[Attempt]:
        """The lines still in their lane or running (not those whose result waits to be collected)."""
        return [a for i, a in self.inflight.items() if i not in self.finished]

    async def collect(self, redis: aredis.Redis, storage: FileStorage, *, force: bool = False) -> int:
        """Move the recorded results into the next storage part, once enough of them wait (or ``force``);
        how many lines finished since the last look."""
        waiting = {int(raw) for raw in await redis.hkeys(keys.batch_results(self.id))}
        new = len(waiting - self.finished)
        self.finished = waiting
        due = time.monotonic() - self.last_part >= PART_EVERY or len(waiting) >= PART_LINES
        if not waiting or not (force or due):
            return new
        self.last_part = time.monotonic()
        results = await redis.hgetall(keys.batch_results(self.id))
        if not results:
            return new
        lines = sorted((int(k), _bytes(v)) for k, v in results.items())
        content = b"".join(
            kind_line[:1] + str(index).encode() + b" " + kind_line[1:] + b"\n" for index, kind_line in lines
        )
        part = self.record.number("parts")
        await storage.put(part_key(self.id, part), _one(content))
        completed = sum(1 for _, v in lines if v[:1] == batch_lines.OUTPUT)
        released = [self.inflight[i].reservation for i, _ in lines if i in self.inflight]
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.batch_results(self.id), *results.keys())
            pipe.hdel(keys.batch_inflight(self.id), *results.keys())
            for index, _ in lines:
                pipe.setbit(keys.batch_done(self.id), index, 1)
            record = keys.batch_record(self.id)
            pipe.hincrby(record, "completed", completed)
            pipe.hincrby(record, "failed", len(lines) - completed)
            pipe.hincrby(record, "parts", 1)
            for reservation in released:  # a line that failed holds its credit until here; idempotent
                pipe.execute_command(*credits.settle_call(reservation, 0).command()[0])
            await pipe.execute()
        for index, _ in lines:
            self.inflight.pop(index, None)
        finished = {index for index, _ in lines}
        self.retries = [a for a in self.retries if a.index not in finished]
        self.finished -= finished
        fields = dict(self.record.fields)
        fields["parts"] = str(part + 1)
        fields["completed"] = str(self.record.number("completed") + completed)
        fields["failed"] = str(self.record.number("failed") + len(lines) - completed)
        self.record = BatchRecord(fields)
        return max(new, len(lines))

    async def fail_lines(
        self, redis: aredis.Redis, refs: list[tuple[LineRef, str, str]], cursor: int | None = None
    ) -> None:
        """Record error results (code, message) of lines that will not run; move the cursor to ``cursor``."""
        async with redis.pipeline(transaction=True) as pipe:
            for ref, code, message in refs:
                call = batch_lines.record_call(
                    ref, batch_lines.ERROR, batch_lines.error_line(ref, code, message)
                )
                pipe.execute_command(*call.command()[0])
            if cursor is not None:
                pipe.hset(keys.batch_record(self.id), "cursor", cursor)
            await pipe.execute()


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
