"""asyncio Redis clients for the hot path: a blocking pool, commands packed by hiredis, and optionally
auto-pipelined (:mod:`shared.autopipeline`).

redis-py's asyncio connection packs every command in Python even when hiredis is installed, where it
only parses replies, and a job sends dozens of commands.  :class:`HiredisPackingConnection` packs them
in C with ``hiredis.pack_command``, byte-for-byte the same, and falls back to redis-py for anything
hiredis refuses.  The pool blocks when all its connections are busy: the default one raises
``MaxConnectionsError`` instead.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aredis
from redis.asyncio.connection import Connection

from shared.autopipeline import AutoPipelineRedis
from shared.errors import ConfigError
from shared.tested_versions import require_tested_redis

try:
    import hiredis
except ImportError:  # hiredis is a dependency (redis[hiredis]); without it redis-py packs
    hiredis = None  # type: ignore[assignment]


class HiredisPackingConnection(Connection):
    """A TCP connection whose commands hiredis packs; byte-for-byte what redis-py would send."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if hiredis is None or not args:
            return super().pack_command(*args)
        first = args[0]
        if isinstance(first, str) and " " in first:  # "CLIENT SETNAME": Redis wants the words apart
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except (TypeError, ValueError):  # e.g. a bool (redis-py raises its own DataError for it)
            return super().pack_command(*args)


def async_client(
    url: str,
    *,
    max_connections: int,
    timeout: float | None = None,
    auto_pipeline: bool = False,
    **options: Any,
) -> aredis.Redis:
    """A client over a blocking pool of ``max_connections``; a caller waits up to ``timeout`` seconds
    (None: as long as it takes) for a free connection.  ``options`` go to each connection.

    With ``auto_pipeline``, commands and pipelines share one connection and leave in one write per pass
    of the event loop (:mod:`shared.autopipeline`; ``redis://``, ``rediss://`` and ``unix://`` URLs); the
    pool then serves only pub/sub and blocking commands.  Without it every command takes a pooled
    connection of plain redis-py (the ``redis_auto_pipeline = false`` setting, for diagnosis)."""
    scheme = urlsplit(url).scheme
    if scheme == "redis":  # unix:// and rediss:// keep their own connection classes
        options["connection_class"] = HiredisPackingConnection
    pool = aredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout, **options
    )
    if auto_pipeline:
        if options.get("decode_responses"):
            raise ValueError("the auto-pipelined client returns bytes, as the hot path reads them")
        if scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(f"unsupported Redis URL scheme {scheme!r} (redis://, rediss:// or unix://)")
        require_tested_redis()
        return AutoPipelineRedis.from_pool(pool)
    return aredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes its connections
