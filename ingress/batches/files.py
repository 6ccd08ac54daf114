"""File records: what ``/v1/files`` shows of an uploaded or output file, kept in Redis while the
content sits in :mod:`ingress.batches.storage`.

A record belongs to one account; :func:`get_file` answers 404 for another account's file exactly as for
one that does not exist.  Files expire ``BatchSettings.file_ttl`` after their creation, or sooner as the
client asked (:mod:`ingress.batches.expiry_policy`): the record carries ``expires_at``, reads treat an
expired file as gone, and the batch driver's sweep (:func:`sweep_expired`) deletes the content and the
record.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aredis
from redis.exceptions import RedisError
from redis.typing import EncodableT

from ingress.batches.storage import FileStorage
from shared import keys
from shared.errors import NotFound, ServiceUnavailable

PURPOSES: Final = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
BATCH_OUTPUT: Final = "batch_output"


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: str
    account_id: str
    filename: str
    purpose: str
    size: int
    created_at: int
    expires_at: int

    @property
    def storage_key(self) -> str:
        return storage_key(self.id)

    def to_json(self) -> dict[str, Any]:
        """The OpenAI ``File`` object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.size,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }

    def to_hash(self) -> dict[EncodableT, EncodableT]:
        return {
            "id": self.id,
            "account_id": self.account_id,
            "filename": self.filename,
            "purpose": self.purpose,
            "bytes": self.size,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> FileRecord:
        text = {_text(k): _text(v) for k, v in raw.items()}
        return cls(
            id=text["id"],
            account_id=text["account_id"],
            filename=text.get("filename", ""),
            purpose=text.get("purpose", ""),
            size=int(text.get("bytes", "0")),
            created_at=int(text.get("created_at", "0")),
            expires_at=int(text.get("expires_at", "0")),
        )


def storage_key(file_id: str) -> str:
    """Where a file's content is stored (it may outlive the file's record: :func:`delete_file`)."""
    return f"files/{file_id}"


def new_file_id() -> str:
    return "file-" + secrets.token_hex(12)


def not_found(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id}", param="file_id")


async def store_file(
    redis: aredis.Redis,
    storage: FileStorage,
    *,
    account_id: str,
    filename: str,
    purpose: str,
    chunks: AsyncIterable[bytes],
    ttl: int,
    file_id: str | None = None,
) -> FileRecord:
    """Write the content, then its record: a record never points at content that is not there."""
    file_id = file_id or new_file_id()
    size = await storage.put(storage_key(file_id), chunks)
    now = int(time.time())
    record = FileRecord(file_id, account_id, filename, purpose, size, now, now + ttl)
    await save_record(redis, record)
    return record


async def save_record(redis: aredis.Redis, record: FileRecord) -> None:
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.file_record(record.id), mapping=record.to_hash())
            pipe.zadd(keys.account_files(record.account_id), {record.id: time.time_ns() // 1000})
            pipe.zadd(keys.FILES_EXPIRY, {record.id: record.expires_at})
            await pipe.execute()
    except RedisError as exc:
        raise _unreachable() from exc


async def load_files(redis: aredis.Redis, file_ids: list[str]) -> list[FileRecord | None]:
    """Records by id; None for one that is missing or expired."""
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for file_id in file_ids:
                pipe.hgetall(keys.file_record(file_id))
            raws = await pipe.execute()
    except RedisError as exc:
        raise _unreachable() from exc
    now = time.time()
    records = [FileRecord.from_hash(raw) if raw else None for raw in raws]
    return [r if r is not None and r.expires_at > now else None for r in records]


async def get_file(redis: aredis.Redis, file_id: str, account_id: str) -> FileRecord:
    """The account's file, or 404 (whether it never existed, expired, or is another account's)."""
    (record,) = await load_files(redis, [file_id])
    if record is None or record.account_id != account_id:
        raise not_found(file_id)
    return record


async def delete_file(redis: aredis.Redis, storage: FileStorage, record: FileRecord) -> None:
    """Drop the record first (the file is gone for clients at once), then the content, unless an
    unfinished batch reads it as its input: the last such batch deletes it as it ends
    (:func:`release_input`)."""
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.file_record(record.id))
            pipe.zrem(keys.account_files(record.account_id), record.id)
            pipe.zrem(keys.FILES_EXPIRY, record.id)
            pipe.zadd(keys.FILES_DELETING, {record.id: time.time()})  # the sweep's, if we die next
            pipe.scard(keys.file_batches(record.id))
            *_, readers = await pipe.execute()
    except RedisError as exc:
        raise _unreachable() from exc
    if not readers:
        await storage.delete(record.storage_key)
    try:
        await redis.zrem(keys.FILES_DELETING, record.id)
    except RedisError:
        pass  # the content is gone (or kept for a batch): the sweep drops the entry


def hold_input_commands(file_id: str, batch_id: str) -> list[tuple[str, ...]]:
    """The writes that make ``batch_id`` a reader of ``file_id``'s content (see :func:`delete_file`)."""
    key = keys.file_batches(file_id)
    return [("SADD", key, batch_id), ("EXPIRE", key, str(keys.FILE_BATCHES_TTL))]


async def hold_input(redis: aredis.Redis, file_id: str, batch_id: str) -> None:
    """Make ``batch_id`` a reader of ``file_id``'s content (idempotent)."""
    async with redis.pipeline(transaction=True) as pipe:
        for command in hold_input_commands(file_id, batch_id):
            pipe.execute_command(*command)
        await pipe.execute()


async def release_input(redis: aredis.Redis, storage: FileStorage, file_id: str, batch_id: str) -> None:
    """A batch that read ``file_id`` as its input ended: delete the content if the file was deleted (or
    expired) meanwhile and no other unfinished batch reads it.  Idempotent."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.srem(keys.file_batches(file_id), batch_id)
        pipe.zadd(keys.FILES_DELETING, {file_id: time.time()}, nx=True)  # the sweep's, if we die next
        pipe.scard(keys.file_batches(file_id))
        pipe.exists(keys.file_record(file_id))
        _, _, readers, exists = await pipe.execute()
    if not readers and not exists:
        await storage.delete(storage_key(file_id))
    await redis.zrem(keys.FILES_DELETING, file_id)


async def sweep_expired(redis: aredis.Redis, storage: FileStorage, *, now: float | None = None) -> int:
    """Delete every file past its expiry (content and record), and finish the deletions a killed process
    left half-done; how many files expired."""
    now = time.time() if now is None else now
    await _finish_deletions(redis, storage, now)
    found = await redis.zrangebyscore(keys.FILES_EXPIRY, 0, now, start=0, num=500)
    expired = [raw.decode() if isinstance(raw, bytes) else str(raw) for raw in found]
    for file_id in expired:
        raw = await redis.hgetall(keys.file_record(file_id))
        if raw:
            await delete_file(redis, storage, FileRecord.from_hash(raw))
        else:
            await redis.zrem(keys.FILES_EXPIRY, file_id)
    return len(expired)


async def _finish_deletions(redis: aredis.Redis, storage: FileStorage, now: float) -> None:
    """Delete the content of each file whose record went more than ``FILES_DELETING_GRACE`` seconds ago
    and that no unfinished batch reads (its last one deletes it then, or this sweep once it is done)."""
    found = await redis.zrangebyscore(
        keys.FILES_DELETING, 0, now - keys.FILES_DELETING_GRACE, start=0, num=500
    )
    for file_id in (_text(raw) for raw in found):
        async with redis.pipeline(transaction=False) as pipe:
            pipe.exists(keys.file_record(file_id))
            pipe.scard(keys.file_batches(file_id))
            exists, readers = await pipe.execute()
        if not exists and not readers:  # with readers, the last one's end deletes it (release_input)
            await storage.delete(storage_key(file_id))
        await redis.zrem(keys.FILES_DELETING, file_id)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _unreachable() -> ServiceUnavailable:
    return ServiceUnavailable("The file store's index is unreachable; retry shortly.")
