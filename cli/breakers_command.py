"""``aiorouter breakers``: every deployment's circuit breaker (closed, open, half-open), for operators.

Lists the catalog's deployments plus any other deployment that ever failed, from the shared Redis state
(:meth:`shared.breaker.CircuitBreaker.views`); the same view as ``GET /admin/breakers``.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
import redis

from cli.config_option import add_config_option
from cli.failures import CommandFailed, redis_failure
from cli.redis_finding import settings_with_redis
from shared.breaker import BreakerView, CircuitBreaker
from shared.errors import ServiceUnavailable
from shared.redis_client import plain_async_client
from shared.routing_state import catalog_deployment_ids
from shared.settings import Settings

_REDIS_CONNECT_TIMEOUT = 3.0


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "breakers",
        help="show every deployment's circuit breaker",
        description="Show each deployment's circuit breaker: state, failures in the window, cooldown end.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    add_config_option(parser)
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    settings = settings_with_redis(args)
    views = asyncio.run(_views(settings))
    if args.json:
        print(orjson.dumps([view.to_dict() for view in views]).decode())
    else:
        print(format_table(views))
    return 0


async def _views(settings: Settings) -> list[BreakerView]:
    client = plain_async_client(settings.redis_url, socket_connect_timeout=_REDIS_CONNECT_TIMEOUT)
    try:
        breaker = CircuitBreaker(client, settings.breaker)
        return await breaker.views(catalog_deployment_ids(settings.models))
    except ServiceUnavailable as exc:
        cause = exc.__cause__
        if isinstance(cause, redis.RedisError):
            raise redis_failure(settings.redis_url, cause) from exc
        raise CommandFailed(exc.message) from exc
    finally:
        await client.aclose()


def format_table(views: list[BreakerView]) -> str:
    """The breakers as an aligned text table."""
    if not views:
        return "No deployments."
    rows = [("DEPLOYMENT", "STATE", "FAILURES", "OPEN UNTIL (UTC)", "PROBE", "TRIPS")]
    rows += [
        (
            v.deployment_id,
            v.status,
            str(v.failures),
            _utc(v.opens_until) if v.opens_until is not None else "-",
            "in flight" if v.probe_in_flight else "-",
            str(v.trips),
        )
        for v in views
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")
