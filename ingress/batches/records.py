"""Batch records in Redis: the ``Batch`` object's fields, its counts and the driver's progress.

Statuses (OpenAI's)::

    validating → in_progress → finalizing → completed
        ↓             ↓            ↘ expired (the completion window passed)
      failed      cancelling → cancelled

A status changes only through :func:`transition`, a script that moves it from an allowed status, so the
driver and a client's cancel never overwrite each other.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
import redis.asyncio as aredis
from redis.exceptions import RedisError
from redis.typing import EncodableT

from ingress.batches import files
from shared import keys
from shared.errors import InvalidRequest, NotFound, ServiceUnavailable
from shared.lua import LuaScript

TRANSITION = LuaScript.load("batch_transition")
FINAL: Final = frozenset({"completed", "failed", "expired", "cancelled"})
CANCELLABLE: Final = ("validating", "in_progress")
TIMESTAMPS: Final = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


@dataclass(frozen=True, slots=True)
class BatchRecord:
    fields: Mapping[str, str]

    @property
    def id(self) -> str:
        return self.fields["id"]

    @property
    def account_id(self) -> str:
        return self.fields["account_id"]

    @property
    def status(self) -> str:
        return self.fields["status"]

    def number(self, name: str) -> int:
        return int(self.fields.get(name) or 0)

    def to_json(self) -> dict[str, Any]:
        """The OpenAI ``Batch`` object; optional fields without a value are left out (the spec does not
        let them be null), but for ``metadata``, which may be."""
        f = self.fields
        errors = orjson.loads(f["errors"]) if f.get("errors") else None
        batch = {
            "id": f["id"],
            "object": "batch",
            "endpoint": f["endpoint"],
            "model": f.get("model") or None,
            "errors": {"object": "list", "data": errors} if errors else None,
            "input_file_id": f["input_file_id"],
            "completion_window": f["completion_window"],
            "status": f["status"],
            "output_file_id": f.get("output_file_id") or None,
            "error_file_id": f.get("error_file_id") or None,
            "created_at": int(f["created_at"]),
            "expires_at": int(f["expires_at"]),
            **{name: int(f[name]) if f.get(name) else None for name in TIMESTAMPS},
            "request_counts": {
                "total": self.number("total"),
                "completed": self.number("completed"),
                "failed": self.number("failed"),
            },
            "usage": self.usage(),
        }
        present = {name: value for name, value in batch.items() if value is not None}
        return {**present, "metadata": orjson.loads(f["metadata"]) if f.get("metadata") else None}

    def usage(self) -> dict[str, Any]:
        """OpenAI's batch ``usage``: the tokens of the answers recorded so far (``batch_result.lua``)."""
        input_tokens, output_tokens = self.number("input_tokens"), self.number("output_tokens")
        return {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": self.number("cached_tokens")},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.number("reasoning_tokens")},
            "total_tokens": input_tokens + output_tokens,
        }


def new_batch_id() -> str:
    return "batch_" + secrets.token_hex(12)


async def create_batch(
    redis: aredis.Redis,
    *,
    account_id: str,
    input_file_id: str,
    input_bytes: int,
    endpoint: str,
    completion_window: str,
    window_seconds: int,
    metadata: Mapping[str, str] | None,
    output_expires_after: int | None = None,
) -> BatchRecord:
    """A new ``validating`` batch, reading its input's content until it ends; ``output_expires_after``:
    the seconds its output and error files should live (None: ``file_ttl``)."""
    now = int(time.time())
    batch_id = new_batch_id()
    fields = {
        "id": batch_id,
        "account_id": account_id,
        "endpoint": endpoint,
        "input_file_id": input_file_id,
        "input_bytes": str(input_bytes),  # validation reads it even if the file is deleted meanwhile
        "completion_window": completion_window,
        "status": "validating",
        "created_at": str(now),
        "expires_at": str(now + window_seconds),
        "metadata": orjson.dumps(metadata).decode() if metadata is not None else "",
        "output_expires_after": str(output_expires_after or ""),
        "total": "0",
        "completed": "0",
        "failed": "0",
        "cursor": "0",
        "parts": "0",
    }
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.batch_record(batch_id), mapping=_encodable(fields))
            created_us = time.time_ns() // 1000
            pipe.zadd(keys.account_batches(account_id), {batch_id: created_us})
            kept_since_us = created_us - keys.ACCOUNT_BATCHES_KEPT * 1_000_000
            pipe.zremrangebyscore(keys.account_batches(account_id), "-inf", f"({kept_since_us}")
            pipe.zadd(keys.BATCHES_ACTIVE, {batch_id: time.time_ns() // 1000})
            for command in files.hold_input_commands(input_file_id, batch_id):  # kept until it ends
                pipe.execute_command(*command)
            await pipe.execute()
    except RedisError as exc:
        raise _unreachable() from exc
    return BatchRecord(fields)


async def load_batches(redis: aredis.Redis, batch_ids: list[str]) -> list[BatchRecord | None]:
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for batch_id in batch_ids:
                pipe.hgetall(keys.batch_record(batch_id))
            raws = await pipe.execute()
    except RedisError as exc:
        raise _unreachable() from exc
    return [BatchRecord({k.decode(): v.decode() for k, v in raw.items()}) if raw else None for raw in raws]


async def load_batch(redis: aredis.Redis, batch_id: str) -> BatchRecord | None:
    (record,) = await load_batches(redis, [batch_id])
    return record


async def get_batch(redis: aredis.Redis, batch_id: str, account_id: str) -> BatchRecord:
    """The account's batch, or 404 (whether it never existed or is another account's)."""
    record = await load_batch(redis, batch_id)
    if record is None or record.account_id != account_id:
        raise NotFound(f"No such Batch object: {batch_id}", param="batch_id")
    return record


async def transition(
    redis: aredis.Redis, batch_id: str, allowed: tuple[str, ...], status: str, **fields: str | int
) -> bool:
    """Move the batch to ``status`` if it is in one of ``allowed``, setting ``fields`` with it."""
    pairs = [item for name, value in fields.items() for item in (name, value)]
    reply = await TRANSITION(redis, [keys.batch_record(batch_id)], [" ".join(allowed), status, *pairs])
    return bool(reply)


async def cancel_batch(redis: aredis.Redis, record: BatchRecord) -> BatchRecord:
    """Ask the driver to stop the batch: ``cancelling`` now, ``cancelled`` once its running lines end."""
    if record.status in ("cancelling", "cancelled"):
        return record
    try:
        moved = await transition(redis, record.id, CANCELLABLE, "cancelling", cancelling_at=int(time.time()))
        fresh = await load_batch(redis, record.id)
    except RedisError as exc:
        raise _unreachable() from exc
    if fresh is None:
        raise NotFound(f"No such Batch object: {record.id}", param="batch_id")
    if not moved and fresh.status not in ("cancelling", "cancelled"):
        raise InvalidRequest(f"Cannot cancel a batch whose status is '{fresh.status}'.", code="invalid_value")
    return fresh


def _encodable(fields: Mapping[str, str]) -> dict[EncodableT, EncodableT]:
    return dict(fields.items())


def _unreachable() -> ServiceUnavailable:
    return ServiceUnavailable("The batch store is unreachable; retry shortly.")
