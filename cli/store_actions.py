"""Running a subcommand's action against the account store: settings, one Redis client, clear failures.

Shared by ``aiorouter accounts``, ``credits`` and ``usage``: an action is an async function of the
client, the settings and the parsed arguments; a Redis or :class:`~shared.errors.AIORouterError` failure
becomes one :class:`~cli.failures.CommandFailed` line, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import redis
import redis.asyncio as aredis

from cli.failures import CommandFailed, redis_failure
from cli.logging_setup import escaped
from cli.redis_finding import settings_with_redis
from shared.errors import AIORouterError
from shared.redis_client import plain_async_client
from shared.settings import Settings

REDIS_CONNECT_TIMEOUT = 3.0

Action = Callable[[aredis.Redis, Settings, argparse.Namespace], Awaitable[int]]


def store_handler(action: Action) -> Callable[[argparse.Namespace], int]:
    """An argparse handler that runs ``action`` with the settings and a Redis client."""

    def handler(args: argparse.Namespace) -> int:
        settings = settings_with_redis(args)
        return asyncio.run(with_redis(settings, args, action))

    return handler


async def with_redis(settings: Settings, args: argparse.Namespace, action: Action) -> int:
    """Run ``action`` with a Redis client for ``settings``; its failures as one :class:`CommandFailed`
    line (exit status 2 for a refused argument, 1 otherwise)."""
    client = plain_async_client(settings.redis_url, socket_connect_timeout=REDIS_CONNECT_TIMEOUT)
    try:
        return await action(client, settings, args)
    except redis.RedisError as exc:
        raise redis_failure(settings.redis_url, exc) from exc
    except AIORouterError as exc:
        raise CommandFailed(exc.message, exit_status=2 if exc.status == 400 else 1) from exc
    finally:
        await client.aclose()


def print_json(value: Any) -> None:
    print(orjson.dumps(value).decode())


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Left-aligned columns, two spaces apart; a cell's unprintable characters (a terminal escape in a
    name an account chose, a newline) written as escapes, so no cell can drive the operator's terminal."""
    table = [list(header), *([escaped(cell) for cell in row] for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def utc(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S")
