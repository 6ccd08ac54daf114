"""Cursor pagination over one account's sorted set of ids, newest first, as OpenAI's list endpoints do
(``after`` = the last id of the previous page, ``limit``, ``has_more``, ``first_id``, ``last_id``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import redis.asyncio as aredis

from shared.errors import InvalidRequest

T = TypeVar("T")


def parse_limit(raw: str | None, *, default: int, maximum: int) -> int:
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()):  # no sign, separator, space or other script's digits
        raise InvalidRequest("'limit' must be an integer.", param="limit", code="invalid_type")
    limit = int(raw) if len(raw) <= 9 else maximum + 1
    if not 1 <= limit <= maximum:
        raise InvalidRequest(f"'limit' must be between 1 and {maximum}.", param="limit", code="invalid_value")
    return limit


async def page(
    redis: aredis.Redis,
    index: str,
    *,
    after: str | None,
    limit: int,
    load: Callable[[list[str]], Awaitable[list[T | None]]],
    keep: Callable[[T], bool] = lambda item: True,
    ascending: bool = False,
) -> tuple[list[T], bool]:
    """Up to ``limit`` items after ``after`` in ``index`` (an unknown ``after`` starts at the top), and
    whether more follow; ``load`` reads records by id (None for a vanished one), ``keep`` filters."""
    start = 0
    if after:
        rank = await (redis.zrank(index, after) if ascending else redis.zrevrank(index, after))
        start = 0 if rank is None else int(rank) + 1  # type: ignore[arg-type]
    items: list[T] = []
    step = max(limit, 50)
    while True:
        fetch = redis.zrange if ascending else redis.zrevrange
        ids = [_text(raw) for raw in await fetch(index, start, start + step - 1)]
        if not ids:
            return items, False
        for item in await load(ids):
            if item is None or not keep(item):
                continue
            if len(items) == limit:
                return items, True
            items.append(item)
        start += step


def list_object(data: list[Mapping[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": list(data),
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
