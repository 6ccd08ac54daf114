"""Every Redis client the system opens: asyncio clients for the hot path (a blocking pool, commands packed
by hiredis, optionally auto-pipelined: :mod:`shared.autopipeline`), plain asyncio and sync clients for the
rest, all from one URL, a Redis' own or a Sentinel-managed master's.

``redis+sentinel://[[user]:password@]host1:port1,host2:port2/service_name[/db]`` names the Sentinels
(port 26379 when left out) and the master's service name; the password and user are the master's (the
Sentinels are asked without).  Every connection, pooled, pub/sub, blocking or auto-pipelined, asks the
Sentinels for the master's address when it (re)connects, so after a failover the next connection
reaches the new master; the old master's connections are closed by Sentinel when it demotes it.

redis-py's asyncio connection packs every command in Python even when hiredis is installed, where it
only parses replies, and a job sends dozens of commands.  :class:`HiredisPackingConnection` packs them
in C with ``hiredis.pack_command``, byte-for-byte the same, and falls back to redis-py for anything
hiredis refuses.  The pool blocks when all its connections are busy: the default one raises
``MaxConnectionsError`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aredis
import redis.sentinel
from redis.asyncio.connection import Connection, parse_url
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedConnection

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


SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379
SENTINEL_TIMEOUT = 1.0  # seconds a Sentinel may take to connect or answer before the next one is asked


@dataclass(frozen=True, slots=True)
class SentinelURL:
    """A ``redis+sentinel://`` URL, parsed."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None

    def master_options(self) -> dict[str, Any]:
        """What each connection to the master needs beyond its address."""
        options: dict[str, Any] = {"db": self.db}
        if self.username is not None:
            options["username"] = self.username
        if self.password is not None:
            options["password"] = self.password
        return options


def check_redis_url(url: str) -> None:
    """ConfigError unless ``url`` is a Redis URL a client can be made from (``redis://``, ``rediss://``,
    ``unix://`` as redis-py reads them, or a well-formed ``redis+sentinel://``)."""
    if parse_sentinel_url(url) is not None:
        return
    try:
        parse_url(url)
    except ValueError as exc:  # an unknown scheme, a port out of range, a database that is no number
        raise ConfigError(f"not a Redis URL: {_shown(url)} ({exc})") from None


def parse_sentinel_url(url: str) -> SentinelURL | None:
    """The Sentinel URL ``url`` is, or None for any other scheme; ConfigError when it is malformed."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        return None
    if parts.query or parts.fragment:
        raise ConfigError(f"a {SENTINEL_SCHEME}:// URL takes no query or fragment: {_shown(url)}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = tuple(_host_port(entry, url) for entry in hosts.split(","))
    path = [segment for segment in parts.path.split("/")]
    if len(path) not in (2, 3) or not path[1]:
        raise ConfigError(
            f"a {SENTINEL_SCHEME}:// URL ends in /service_name or /service_name/db: {_shown(url)}"
        )
    db = 0
    if len(path) == 3 and path[2]:
        if not path[2].isdigit():
            raise ConfigError(f"the database of a {SENTINEL_SCHEME}:// URL is a number: {_shown(url)}")
        db = int(path[2])
    return SentinelURL(sentinels, unquote(path[1]), db, username, password)


def _host_port(entry: str, url: str) -> tuple[str, int]:
    if not entry:
        raise ConfigError(f"a {SENTINEL_SCHEME}:// URL names at least one host:port: {_shown(url)}")
    if entry.startswith("["):  # [IPv6]:port
        host, _, rest = entry[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = entry.partition(":")
    if not host or (port_text and not port_text.isdigit()):
        raise ConfigError(f"not a host:port in a {SENTINEL_SCHEME}:// URL: {entry!r}")
    port = int(port_text) if port_text else SENTINEL_PORT
    if not 0 < port < 65536:
        raise ConfigError(f"not a port in a {SENTINEL_SCHEME}:// URL: {entry!r}")
    return host, port


def _shown(url: str) -> str:
    """``url`` without its password, for an error message."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hosts = rest.rpartition("@")
    return f"{scheme}{sep}***@{hosts}" if at and userinfo else url


class _HiredisSentinelConnection(SentinelManagedConnection, HiredisPackingConnection):
    """A connection to the master a Sentinel names, its commands packed by hiredis."""


class _SentinelPool(SentinelConnectionPool):
    """A Sentinel-managed pool that closes its connections to the Sentinels with its own."""

    async def aclose(self) -> None:
        await super().aclose()
        for sentinel in self.sentinel_manager.sentinels:
            await sentinel.aclose()


class _BlockingSentinelPool(_SentinelPool, aredis.BlockingConnectionPool):
    """A Sentinel-managed pool that makes a caller wait for a free connection instead of raising."""


class _SyncSentinelPool(redis.sentinel.SentinelConnectionPool):
    """The sync :class:`_SentinelPool`."""

    def close(self) -> None:
        super().close()
        for sentinel in self.sentinel_manager.sentinels:
            sentinel.close()


def _async_sentinel(target: SentinelURL) -> AsyncSentinel:
    return AsyncSentinel(
        target.sentinels,
        sentinel_kwargs={"socket_timeout": SENTINEL_TIMEOUT, "socket_connect_timeout": SENTINEL_TIMEOUT},
    )


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
    sentinel = parse_sentinel_url(url)
    if sentinel is not None:
        pool: aredis.ConnectionPool = _BlockingSentinelPool(  # type: ignore[no-untyped-call]
            sentinel.service_name,
            _async_sentinel(sentinel),
            max_connections=max_connections,
            timeout=timeout,
            connection_class=_HiredisSentinelConnection,
            **sentinel.master_options(),
            **options,
        )
    elif scheme == "redis":  # unix:// and rediss:// keep their own connection classes
        options["connection_class"] = HiredisPackingConnection
    if sentinel is None:
        pool = aredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout, **options
        )
    if auto_pipeline:
        if options.get("decode_responses"):
            raise ValueError("the auto-pipelined client returns bytes, as the hot path reads them")
        if scheme not in ("redis", "rediss", "unix", SENTINEL_SCHEME):
            raise ConfigError(
                f"unsupported Redis URL scheme {scheme!r} (redis://, rediss://, unix:// or {SENTINEL_SCHEME}://)"
            )
        require_tested_redis()
        return AutoPipelineRedis.from_pool(pool)
    return aredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes its connections


def plain_async_client(url: str, **options: Any) -> aredis.Redis:
    """A plain redis-py asyncio client of ``url`` (a Sentinel URL's master included), for commands off
    the hot path: the CLI's, a stock rq worker's job.  ``options`` go to each connection."""
    sentinel = parse_sentinel_url(url)
    if sentinel is None:
        return aredis.Redis.from_url(url, **options)
    client: aredis.Redis = _async_sentinel(sentinel).master_for(
        sentinel.service_name, connection_pool_class=_SentinelPool, **sentinel.master_options(), **options
    )
    return client


def sync_client(url: str, **options: Any) -> redis.Redis:
    """A sync redis-py client of ``url`` (a Sentinel URL's master included): rq's own objects, the
    worker's liveness thread.  ``options`` go to each connection."""
    sentinel = parse_sentinel_url(url)
    if sentinel is None:
        return redis.Redis.from_url(url, **options)
    manager = redis.sentinel.Sentinel(
        sentinel.sentinels,
        sentinel_kwargs={"socket_timeout": SENTINEL_TIMEOUT, "socket_connect_timeout": SENTINEL_TIMEOUT},
    )
    client: redis.Redis = manager.master_for(
        sentinel.service_name, connection_pool_class=_SyncSentinelPool, **sentinel.master_options(), **options
    )
    return client
