"""Redis commands of many coroutines on one connection, written together, behind redis-py's API.

redis-py's asyncio client takes a pooled connection for each command or pipeline, writes it, waits for
its reply and only then lets the connection serve anyone else: a ``send`` and a ``recv`` system call and
the Python around them per round trip, for every request in flight.  :class:`AutoPipelineRedis` is a
``redis.asyncio.Redis`` whose commands and pipelines share ONE connection instead:

    coroutines ──┐  packed by hiredis, queued
                 ├──►  one write at a time  ──►  Redis
    coroutines ──┘  ◄──  replies parsed by hiredis, handed back in order (Redis answers in order)

What is issued in one pass of the event loop leaves in one write, at the end of that pass; at most
:data:`WRITES_IN_FLIGHT` writes await their replies at once, and what is issued while that many do waits
for the oldest one's replies and then leaves together, in the next.  A ``send`` costs the kernel's TCP
work of both ends whatever it carries, so under load the writes, not the commands, are what cost: holding
a batch while writes are on the wire makes each write carry more of them.  Two in flight, not one: a
command issued while a single write awaits its replies (at low load, two requests' commands a moment
apart) leaves at once instead of waiting a whole round trip.

A pipeline's commands stay together on the wire, so ``MULTI``…``EXEC`` blocks never interleave.  Replies
go through redis-py's own response callbacks and error classes, so callers see exactly what redis-py
returns and raises (``ResponseError``, ``NoScriptError``, ``ConnectionError``, ``TimeoutError``…).

A caller cancelled while waiting costs nothing: its reply is read and dropped, the connection stays in
sync (redis-py has to drop the connection).  A lost connection fails everything waiting on it with
``ConnectionError``; the next command connects again (to the master the Sentinels name now, for a
``redis+sentinel://`` URL; a ``READONLY`` reply, from a master demoted under us, drops the connection
the same way).  If Redis leaves a reply outstanding for
``reply_timeout`` seconds the connection is dropped the same way (``TimeoutError`` to the waiters).

Not batched, so they still use redis-py's connection pool: blocking commands (they would stall every
caller behind them), ``WATCH`` and pipelines that use it, pub/sub (``pubsub()`` is redis-py's own).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import hiredis
import redis.asyncio as aredis
from redis._parsers.base import BaseParser
from redis.asyncio.client import Pipeline
from redis.client import EMPTY_RESPONSE
from redis.exceptions import ConnectionError, ReadOnlyError, RedisError, ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.redis_connect import RedisProtocol, handshake_commands, open_protocol

WRITES_IN_FLIGHT = 2  # writes awaiting their replies at once on the shared connection, at most
REPLY_TIMEOUT = 10.0  # seconds Redis may leave a reply outstanding before the connection is dropped
CONNECT_TIMEOUT = 5.0
CLOSE_WAIT = 1.0  # seconds aclose() waits for the shared connection to be gone

UNBATCHED = frozenset(
    {
        "BLPOP",
        "BRPOP",
        "BRPOPLPUSH",
        "BLMOVE",
        "BLMPOP",
        "BZPOPMIN",
        "BZPOPMAX",
        "BZMPOP",
        "XREAD",
        "XREADGROUP",
        "WAIT",
        "WAITAOF",
        "WATCH",
        "UNWATCH",
        "MULTI",
        "EXEC",
        "DISCARD",
        "SUBSCRIBE",
        "PSUBSCRIBE",
        "SSUBSCRIBE",
        "MONITOR",
        "SELECT",
        "AUTH",
        "HELLO",
        "RESET",
        "QUIT",
        "CLIENT",
    }
)
"""Commands that must not share the connection: they block it or change its state."""


def pack(args: Sequence[Any]) -> bytes:
    """One command in RESP, as redis-py would send it (``"SCRIPT LOAD"`` becomes two words)."""
    first = args[0]
    if isinstance(first, str) and " " in first:
        args = (*first.split(), *args[1:])
    try:
        return bytes(hiredis.pack_command(tuple(args)))
    except (TypeError, ValueError):  # e.g. a bool: let redis-py's encoder refuse it with its DataError
        from redis._parsers.encoders import Encoder

        encoder = Encoder("utf-8", "strict", False)  # type: ignore[no-untyped-call]
        encoded = tuple(encoder.encode(arg) for arg in args)  # type: ignore[no-untyped-call]
        return bytes(hiredis.pack_command(encoded))


class _Waiter:
    __slots__ = ("count", "future", "replies", "sent_at")

    def __init__(self, future: asyncio.Future[list[Any]], count: int, sent_at: float) -> None:
        self.future = future
        self.count = count
        self.replies: list[Any] = []
        self.sent_at = sent_at


class _Link(RedisProtocol):
    """One connection: writes joined per loop pass, replies matched to waiters in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, reply_timeout: float) -> None:
        super().__init__()
        self._loop = loop
        self._reply_timeout = reply_timeout
        self._waiting: deque[_Waiter] = deque()
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._writes: deque[int] = deque()  # per write in flight, its waiters still short of replies
        self._watchdog: asyncio.TimerHandle | None = None
        self._lost: Exception | None = None
        self.closed: asyncio.Future[None] = loop.create_future()  # done once the connection is gone

    @property
    def usable(self) -> bool:
        return self._transport is not None and self._lost is None and not self._transport.is_closing()

    def submit(self, data: bytes, count: int) -> asyncio.Future[list[Any]]:
        """Queue ``count`` commands (packed in ``data``); the future gets their ``count`` replies."""
        if not self.usable:
            raise ConnectionError(f"Connection to Redis lost: {self._lost}")
        future: asyncio.Future[list[Any]] = self._loop.create_future()
        now = self._loop.time()
        self._waiting.append(_Waiter(future, count, now))
        self._out.append(data)
        if self._flush_handle is None and len(self._writes) < WRITES_IN_FLIGHT:
            self._flush_handle = self._loop.call_soon(self._flush)
        if self._watchdog is None:
            self._watchdog = self._loop.call_at(now + self._reply_timeout, self._check_overdue)
        return future

    def drop(self, error: Exception) -> None:
        """Give the connection up: whatever waits on it fails with ``error``."""
        self._abort(error)

    # --- asyncio.Protocol ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self._abort(ConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not waiting:  # a reply nobody asked for: the stream is out of step
                self._abort(ConnectionError("Redis sent an unexpected reply."))
                return
            waiter = waiting[0]
            waiter.replies.append(reply)
            if len(waiter.replies) == waiter.count:
                waiting.popleft()
                if not waiter.future.done():  # its caller may have been cancelled: drop the replies
                    waiter.future.set_result(waiter.replies)
                writes = self._writes
                writes[0] -= 1
                if not writes[0]:
                    writes.popleft()
                    if self._out and self._flush_handle is None:
                        # A write is answered: what queued meanwhile goes next, after the callers woken
                        # just now have queued theirs (their callbacks run first in the next pass).
                        self._flush_handle = self._loop.call_soon(self._flush)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(self._lost or ConnectionError(f"Connection to Redis lost: {exc or 'closed'}"))
        if not self.closed.done():
            self.closed.set_result(None)

    # --- internals ----------------------------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_handle = None
        if self._out and self.usable:
            assert self._transport is not None
            data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
            self._writes.append(len(self._out))
            self._out.clear()
            self._transport.write(data)

    def _check_overdue(self) -> None:
        self._watchdog = None
        if not self._waiting or self._lost is not None:
            return
        overdue_at = self._waiting[0].sent_at + self._reply_timeout
        if self._loop.time() >= overdue_at:
            self._abort(RedisTimeoutError(f"Redis did not answer within {self._reply_timeout:g} s."))
        else:
            self._watchdog = self._loop.call_at(overdue_at, self._check_overdue)

    def _abort(self, error: Exception) -> None:
        self._lost = self._lost or error
        if self._transport is not None:
            self._transport.abort()
        self._fail(error)

    def _fail(self, error: Exception) -> None:
        self._lost = self._lost or error
        self._out.clear()
        self._writes.clear()
        for handle in (self._flush_handle, self._watchdog):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._watchdog = None
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(error)


class AutoPipelineRedis(aredis.Redis):
    """``redis.asyncio.Redis`` over one shared, auto-pipelined connection (see the module docstring);
    build it with :func:`shared.redis_client.async_client`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._link: _Link | None = None
        self._connecting: asyncio.Task[_Link] | None = None
        self.reply_timeout = REPLY_TIMEOUT
        self.connect_timeout = CONNECT_TIMEOUT

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        name = args[0]
        if _name_of(name) in UNBATCHED:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        link = self._link
        if link is None or not link.usable:
            link = await self._connect()
        (reply,) = await link.submit(pack(args), 1)
        if isinstance(reply, hiredis.ReplyError):
            if EMPTY_RESPONSE in options:
                return options[EMPTY_RESPONSE]
            raise _demoted(link, _error_of(reply))
        return await self._callback(name, _error_free(reply), options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        return _AutoPipeline(self, transaction)

    async def run_stack(
        self,
        commands: Sequence[tuple[tuple[Any, ...], Mapping[str, Any]]],
        *,
        transaction: bool,
        raise_on_error: bool,
    ) -> list[Any]:
        """Run a pipeline's queued commands in one go on the shared connection."""
        link = self._link
        if link is None or not link.usable:
            link = await self._connect()
        results = _replies(link, await link.submit(*_written(commands, transaction)), commands, transaction)
        out: list[Any] = []
        for number, (reply, (args, options)) in enumerate(zip(results, commands, strict=True), start=1):
            if isinstance(reply, hiredis.ReplyError):
                error = _demoted(link, _error_of(reply))
                if EMPTY_RESPONSE in options:
                    out.append(options[EMPTY_RESPONSE])
                    continue
                if raise_on_error:
                    raise _annotated(error, number, args)
                out.append(error)
            else:
                out.append(await self._callback(args[0], _error_free(reply), dict(options)))
        return out

    async def execute_raw(
        self, commands: Sequence[tuple[tuple[Any, ...], Mapping[str, Any]]], *, transaction: bool = False
    ) -> list[Any]:
        """Run ``commands`` in one go on the shared connection; their replies as Redis sent them (hiredis'
        types, RESP3 maps as dicts, without redis-py's response callbacks or pipeline object: a couple
        of microseconds less per command), a command's error as its ``ResponseError`` in its place.
        For callers that read the replies themselves (:func:`shared.redis_commands.run_commands`).

        With ``transaction``, inside ``MULTI``…``EXEC``: Redis runs none of them unless all of them
        reached it (a connection cut midway, a process killed midway through its write), and a command
        it refuses to queue fails them all (``EXECABORT``: its error is raised)."""
        link = self._link
        if link is None or not link.usable:
            link = await self._connect()
        replies = _replies(link, await link.submit(*_written(commands, transaction)), commands, transaction)
        return [
            _demoted(link, _error_of(reply)) if isinstance(reply, hiredis.ReplyError) else _error_free(reply)
            for reply in replies
        ]

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self._link is not None:
            self._link.close()
            with contextlib.suppress(TimeoutError):  # a TLS close takes a round trip; never wait long
                await asyncio.wait_for(asyncio.shield(self._link.closed), CLOSE_WAIT)
            self._link = None
        await super().aclose(close_connection_pool)

    async def _callback(self, name: Any, reply: Any, options: dict[str, Any]) -> Any:
        options.pop("keys", None)
        callback = self.response_callbacks.get(name)
        if callback is None:
            return reply
        value = callback(reply, **options)
        return await value if inspect.isawaitable(value) else value

    async def _connect(self) -> _Link:
        """The shared connection, (re)made by the first caller that finds none; the rest wait for it."""
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._open())
        task = self._connecting
        try:
            return await asyncio.shield(task)
        finally:
            if task.done() and self._connecting is task:
                self._connecting = None

    async def _open(self) -> _Link:
        loop = asyncio.get_running_loop()
        link = await open_protocol(self, lambda: _Link(loop, self.reply_timeout), self.connect_timeout)
        commands = handshake_commands(self)
        try:
            async with asyncio.timeout(self.connect_timeout):
                replies = await link.submit(b"".join(pack(c) for c in commands), len(commands))
        except TimeoutError as exc:
            link.close()
            raise RedisTimeoutError("Timed out connecting to Redis.") from exc
        except BaseException:  # cancelled (the client closed meanwhile): the half-made connection goes too
            link.close()
            raise
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                link.close()
                raise _error_of(reply)
        self._link = link
        return link


class _AutoPipeline(Pipeline):
    """redis-py's pipeline, executed on the shared connection (with ``WATCH``: redis-py's own way)."""

    def __init__(self, client: AutoPipelineRedis, transaction: bool) -> None:
        super().__init__(client.connection_pool, client.response_callbacks, transaction, None)
        self._client = client

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if self.watching or self.explicit_transaction or self.scripts:
            return await super().execute(raise_on_error)
        stack, self.command_stack = self.command_stack, []
        if not stack:
            return []
        return await self._client.run_stack(
            stack, transaction=self.is_transaction, raise_on_error=raise_on_error
        )


_MULTI = pack(("MULTI",))
_EXEC = pack(("EXEC",))


def _name_of(name: Any) -> str:
    text = name.decode() if isinstance(name, bytes) else str(name)
    return text.split(" ", 1)[0].upper()


def _error_of(reply: hiredis.ReplyError) -> ResponseError:
    error: ResponseError = BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]
    return error


def _demoted(link: _Link, error: ResponseError) -> RedisError:
    """``error``, unless it says the server is a replica now (a failover demoted the master this
    connection reached): then the connection is dropped, so the next command asks anew where the master
    is, and the caller gets a ``ConnectionError`` as for any lost connection."""
    if isinstance(error, ReadOnlyError):
        lost = ConnectionError("The Redis master became a replica (a failover).")
        link.drop(lost)
        return lost
    return error


def _error_free(reply: Any) -> Any:
    """``reply`` with errors nested in arrays (a script's or EXEC's) turned into redis-py's classes."""
    if isinstance(reply, list):
        return [
            _error_of(item) if isinstance(item, hiredis.ReplyError) else _error_free(item) for item in reply
        ]
    return reply


def _written(commands: Sequence[tuple[tuple[Any, ...], Any]], transaction: bool) -> tuple[bytes, int]:
    """What ``commands`` write on the connection (inside ``MULTI``…``EXEC`` with ``transaction``), and
    how many replies come back."""
    packed = [pack(args) for args, _ in commands]
    if transaction:
        return b"".join([_MULTI, *packed, _EXEC]), len(packed) + 2
    return b"".join(packed), len(packed)


def _replies(link: _Link, replies: list[Any], commands: Sequence[Any], transaction: bool) -> list[Any]:
    """Each command's reply, from what :func:`_written`'s write got back."""
    if not transaction:
        return replies
    try:
        return _exec_results(replies, commands)
    except ReadOnlyError as exc:
        raise _demoted(link, exc) from exc


def _exec_results(replies: list[Any], commands: Sequence[Any]) -> list[Any]:
    """The per-command results of ``MULTI``, the commands' ``QUEUED``s and ``EXEC``."""
    exec_reply = replies[-1]
    if isinstance(exec_reply, hiredis.ReplyError):
        # EXECABORT: raise what made Redis refuse to queue a command, as redis-py does.
        queued_errors = [r for r in replies[1:-1] if isinstance(r, hiredis.ReplyError)]
        raise _error_of(queued_errors[0] if queued_errors else exec_reply)
    if exec_reply is None:
        raise WatchError("Watched variable changed.")
    if len(exec_reply) != len(commands):
        raise ResponseError("Wrong number of response items from pipeline execution")
    results: list[Any] = exec_reply
    return results


def _annotated(error: RedisError, number: int, args: Iterable[Any]) -> RedisError:
    command = " ".join(str(arg) for arg in args)[:100]
    error.args = (
        f"Command # {number} ({command}) of pipeline caused error: {error.args[0]}",
        *error.args[1:],
    )
    return error
