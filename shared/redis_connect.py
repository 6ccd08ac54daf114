"""A raw asyncio connection to the Redis a redis-py client names, for protocols that read it themselves
(:mod:`shared.autopipeline`, :mod:`shared.redis_subscriber`; both are a :class:`RedisProtocol`).

Where: the client's Unix socket path, its host and port, or the master its Sentinels name now (asked on
every connect, so that a reconnect after a failover reaches the new master); TLS as redis-py's own
connection would do it for a ``rediss://`` URL.  What is said first: RESP3 (``HELLO 3``, as redis-py 8
speaks it), with ``AUTH`` when the URL has a password, and ``SELECT`` for a database other than 0.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

import hiredis
import redis.asyncio as aredis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

P = TypeVar("P", bound=asyncio.Protocol)


class RedisProtocol(asyncio.Protocol):
    """A connection read with hiredis: its transport once made, its reply reader, a close."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's isn't a subclass)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def open_protocol(client: aredis.Redis, factory: Callable[[], P], within: float) -> P:
    """A connection to ``client``'s Redis, served by ``factory()``'s protocol; redis-py's
    ``ConnectionError``/``TimeoutError`` when it cannot be had within ``within`` seconds."""
    kwargs = client.connection_pool.connection_kwargs
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(within):
            if kwargs.get("path"):
                _, protocol = await loop.create_unix_connection(factory, kwargs["path"])
                return protocol
            host, port = await _address(client.connection_pool, kwargs)
            tls = _tls_context(client.connection_pool.connection_class, kwargs)
            _, protocol = await loop.create_connection(
                factory,
                host,
                port,
                ssl=tls,
                server_hostname=host if tls is not None and tls.check_hostname else None,
            )
            return protocol
    except TimeoutError as exc:
        raise RedisTimeoutError("Timed out connecting to Redis.") from exc
    except OSError as exc:
        raise ConnectionError(f"Error connecting to Redis: {exc}") from exc


def handshake_commands(client: aredis.Redis) -> list[tuple[Any, ...]]:
    """The commands a new connection sends first: ``HELLO 3`` (with ``AUTH``), then ``SELECT``."""
    kwargs = client.connection_pool.connection_kwargs
    hello: tuple[Any, ...] = ("HELLO", 3)
    if kwargs.get("password"):
        hello += ("AUTH", kwargs.get("username") or "default", kwargs["password"])
    commands = [hello]
    if int(kwargs.get("db") or 0):
        commands.append(("SELECT", int(kwargs["db"])))
    return commands


async def _address(pool: aredis.ConnectionPool, kwargs: dict[str, Any]) -> tuple[str, int]:
    if isinstance(pool, SentinelConnectionPool):
        host, port = await pool.get_master_address()  # type: ignore[no-untyped-call]
        return str(host), int(port)
    return kwargs.get("host", "localhost"), int(kwargs.get("port", 6379))


def _tls_context(connection_class: type[Any], kwargs: dict[str, Any]) -> ssl.SSLContext | None:
    """For a ``rediss://`` pool, the TLS context redis-py's own connection would use (CA, client
    certificate, verification and hostname checks from the URL's ``ssl_*`` options); else None."""
    if not issubclass(connection_class, SSLConnection):
        return None
    context: ssl.SSLContext = connection_class(**kwargs).ssl_context.get()
    return context
