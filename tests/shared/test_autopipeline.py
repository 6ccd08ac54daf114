"""The auto-pipelined Redis client: redis-py's answers, one write per loop pass, and its failure paths."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
import redis.asyncio as aredis
from redis.exceptions import ConnectionError, NoScriptError, ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.autopipeline import AutoPipelineRedis, pack
from shared.redis_client import async_client
from shared.redis_commands import Command, run_commands
from tests.waiting import eventually

pytestmark = pytest.mark.redis


@pytest.fixture
async def pair(clean_redis: redis.Redis, redis_url: str) -> AsyncIterator[tuple[aredis.Redis, aredis.Redis]]:
    """(auto-pipelined client, plain redis-py client) on the flushed test database."""
    ours = async_client(redis_url, max_connections=4, auto_pipeline=True)
    theirs = async_client(redis_url, max_connections=4)
    assert isinstance(ours, AutoPipelineRedis)
    yield ours, theirs
    await ours.aclose()
    await theirs.aclose()


async def _replies(client: aredis.Redis) -> list[Any]:
    await client.hset("h", mapping={"a": 1, "b": "x"})
    await client.zadd("z", {"m": 1.5})
    results: list[Any] = [
        await client.hgetall("h"),
        await client.hgetall("missing"),
        await client.exists("h", "missing"),
        await client.expire("h", 100),
        await client.zrangebyscore("z", 0, 10, withscores=True),
        await client.hmget("h", ["a", "zz"]),
        await client.set("s", b"v", nx=True),
        await client.set("s", b"v", nx=True),
        await client.eval("return {1, 'a'}", 0),
        await client.script_load("return 7"),
    ]
    async with client.pipeline(transaction=True) as pipe:
        pipe.incr("n")
        pipe.hgetall("h")
        pipe.pexpire("n", 1000)
        results.append(await pipe.execute())
    return results


async def test_replies_are_what_redis_py_returns(pair: tuple[aredis.Redis, aredis.Redis]) -> None:
    """The same commands give the same Python values through both clients (response callbacks kept)."""
    ours, theirs = pair
    mine = await _replies(ours)
    await theirs.flushdb()
    assert mine == await _replies(theirs)


async def test_errors_are_redis_py_errors(pair: tuple[aredis.Redis, aredis.Redis]) -> None:
    """A wrong-type command raises ResponseError, an unknown script NoScriptError; a pipeline run with
    raise_on_error=False returns them in place, and with raise_on_error=True raises the first."""
    ours, _ = pair
    await ours.set("s", b"v")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await ours.hget("s", "f")
    with pytest.raises(NoScriptError):
        await ours.evalsha("0" * 40, 0)
    async with ours.pipeline(transaction=False) as pipe:
        pipe.evalsha("0" * 40, 0)
        pipe.get("s")
        replies = await pipe.execute(raise_on_error=False)
    assert isinstance(replies[0], NoScriptError) and replies[1] == b"v"
    async with ours.pipeline(transaction=False) as pipe:
        pipe.get("s")
        pipe.hget("s", "f")
        with pytest.raises(ResponseError, match="Command # 2"):
            await pipe.execute()
    assert await ours.get("s") == b"v"  # the connection is still in step


async def test_a_failed_transaction_raises_and_runs_nothing(pair: tuple[aredis.Redis, aredis.Redis]) -> None:
    """A command Redis refuses to queue aborts the whole MULTI/EXEC block, as with redis-py."""
    ours, theirs = pair
    async with ours.pipeline(transaction=True) as pipe:
        pipe.set("a", b"1")
        pipe.execute_command("NOSUCHCOMMAND")
        with pytest.raises(ResponseError):
            await pipe.execute()
    assert await theirs.get("a") is None


def _spy_on_writes(client: aredis.Redis) -> list[bytes]:
    """The writes the client's shared connection makes from now on."""
    assert isinstance(client, AutoPipelineRedis)
    link = client._link
    assert link is not None and link._transport is not None
    transport = link._transport
    writes: list[bytes] = []

    def counting_write(data: Any) -> None:
        writes.append(bytes(data))
        transport.write(data)

    link._transport = _WriteSpy(transport, counting_write)  # type: ignore[assignment]
    return writes


async def test_commands_of_one_loop_pass_leave_in_one_write(pair: tuple[aredis.Redis, aredis.Redis]) -> None:
    """200 coroutines' commands, issued together, cost the connection a single write."""
    ours, _ = pair
    await ours.set("k", b"v")  # connects
    writes = _spy_on_writes(ours)
    replies = await asyncio.gather(*(ours.get("k") for _ in range(200)))
    assert replies == [b"v"] * 200
    assert writes == [pack(("GET", "k")) * 200]


async def test_two_writes_fly_at_once_and_later_commands_wait_for_the_oldest_reply() -> None:
    """A command issued while one write awaits its replies leaves at once (no round trip of delay at low
    load); while WRITES_IN_FLIGHT writes await theirs, the next commands wait, and leave in one write when
    the oldest is answered.  Driven by a server that answers only when told."""
    received = bytearray()
    answer = asyncio.Queue[bytes]()
    writers: list[asyncio.StreamWriter] = []

    async def scripted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read(1 << 16)  # the HELLO
        writer.write(b"%0\r\n")
        await writer.drain()

        async def answers() -> None:
            while True:
                writer.write(await answer.get())
                await writer.drain()

        answering = asyncio.create_task(answers())
        try:
            while data := await reader.read(1 << 16):
                received.extend(data)
        finally:
            answering.cancel()

    server = await asyncio.start_server(scripted, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = async_client(f"redis://127.0.0.1:{port}/0", max_connections=1, auto_pipeline=True)
    assert isinstance(client, AutoPipelineRedis)
    ping = pack(("PING",))

    def pings() -> int:
        return bytes(received).count(ping)

    try:
        first = asyncio.ensure_future(client.ping())
        await eventually(lambda: pings() == 1)
        writes = _spy_on_writes(client)
        second = asyncio.ensure_future(client.ping())
        await eventually(lambda: pings() == 2)  # left at once, beside the unanswered first
        held = [asyncio.ensure_future(client.ping()) for _ in range(2)]
        link = client._link
        assert link is not None
        await eventually(lambda: len(link._out) == 2)  # two writes in flight: these wait
        assert pings() == 2 and len(writes) == 1
        answer.put_nowait(b"+PONG\r\n")  # the oldest write is answered: the held ones go, together
        assert await first is True
        await eventually(lambda: pings() == 4)
        assert writes == [ping, ping + ping]
        answer.put_nowait(b"+PONG\r\n" * 3)
        assert [await f for f in (second, *held)] == [True, True, True]
    finally:
        await close_all(client, writers, server)


async def close_all(
    client: aredis.Redis, writers: list[asyncio.StreamWriter], server: asyncio.Server
) -> None:
    """Close a test's client, the connections its fake server accepted, and the server."""
    await client.aclose()
    for writer in writers:
        writer.close()
    server.close()
    await server.wait_closed()


class _WriteSpy:
    def __init__(self, transport: asyncio.Transport, write: Any) -> None:
        self._transport = transport
        self.write = write

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


async def test_concurrent_transactions_never_interleave(pair: tuple[aredis.Redis, aredis.Redis]) -> None:
    """MULTI/EXEC blocks of many coroutines sharing the connection stay atomic: each sees its own pair."""
    ours, _ = pair

    async def bump(i: int) -> list[Any]:
        async with ours.pipeline(transaction=True) as pipe:
            pipe.incr("counter")
            pipe.rpush("log", i)
            pipe.incr("counter")
            return await pipe.execute()

    results = await asyncio.gather(*(bump(i) for i in range(100)))
    firsts = sorted(result[0] for result in results)
    assert firsts == list(range(1, 200, 2))
    assert all(result[2] == result[0] + 1 for result in results)


async def test_a_cancelled_caller_leaves_the_connection_in_step(
    pair: tuple[aredis.Redis, aredis.Redis],
) -> None:
    """Cancelling a command in flight drops its reply; the next callers get their own replies."""
    ours, _ = pair
    await ours.set("a", b"1")
    await ours.set("b", b"2")
    doomed = asyncio.ensure_future(ours.get("a"))
    await asyncio.sleep(0)  # queued, not yet answered
    doomed.cancel()
    assert await ours.get("b") == b"2"
    assert await ours.get("a") == b"1"


async def test_a_lost_connection_fails_its_waiters(pair: tuple[aredis.Redis, aredis.Redis]) -> None:
    """The shared connection breaking under a queued command fails that command with ConnectionError."""
    ours, _ = pair
    await ours.set("k", b"v")
    assert isinstance(ours, AutoPipelineRedis) and ours._link is not None
    waiting = asyncio.ensure_future(ours.get("k"))
    await asyncio.sleep(0)  # queued on the connection, not yet answered
    assert ours._link._transport is not None
    ours._link._transport.abort()
    with pytest.raises(ConnectionError):
        await waiting


async def test_the_next_command_after_a_server_kill_reconnects(
    pair: tuple[aredis.Redis, aredis.Redis],
) -> None:
    """Redis closing the shared connection (CLIENT KILL) costs nothing but a reconnect."""
    ours, theirs = pair
    await ours.set("k", b"v")
    killed = await theirs.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1
    assert isinstance(ours, AutoPipelineRedis) and ours._link is not None
    link = ours._link
    await eventually(lambda: not link.usable)  # the close reached the client
    assert await ours.get("k") == b"v"


async def test_an_unanswered_command_times_out_and_drops_the_connection() -> None:
    """A server that accepts commands and never answers: the waiter gets TimeoutError after
    ``reply_timeout``, not a hang."""

    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read(1 << 16)  # the HELLO: answered, so the client thinks it is connected
        writer.write(b"%0\r\n")
        await writer.drain()
        await reader.read(1 << 16)  # then silence until the client gives up

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = async_client(f"redis://127.0.0.1:{port}/0", max_connections=1, auto_pipeline=True)
    assert isinstance(client, AutoPipelineRedis)
    client.reply_timeout = 0.3
    try:
        with pytest.raises(RedisTimeoutError):
            async with asyncio.timeout(3):
                await client.get("k")
    finally:
        await close_all(client, writers, server)


async def test_closing_the_client_mid_handshake_closes_the_connection() -> None:
    """A client closed while its connection waits for the handshake's reply (a Redis frozen at that
    moment): the half-made connection is closed then, not left open until garbage collection."""
    handshake_read, closed = asyncio.Event(), asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def frozen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read(1 << 16)  # the HELLO, never answered
        handshake_read.set()
        await reader.read(1 << 16)  # b"" once the client closes its end
        closed.set()

    server = await asyncio.start_server(frozen, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = async_client(f"redis://127.0.0.1:{port}/0", max_connections=1, auto_pipeline=True)
    assert isinstance(client, AutoPipelineRedis)
    command = asyncio.ensure_future(client.get("k"))
    try:
        await asyncio.wait_for(handshake_read.wait(), 3)
        await client.aclose()
        await asyncio.wait_for(closed.wait(), 3)
    finally:
        command.cancel()
        await asyncio.gather(command, return_exceptions=True)
        await close_all(client, writers, server)


async def test_refused_connection_is_a_connection_error() -> None:
    """No Redis at the address: ConnectionError, as redis-py raises."""
    client = async_client("redis://127.0.0.1:1/0", max_connections=1, auto_pipeline=True)
    try:
        with pytest.raises(ConnectionError):
            await client.get("k")
    finally:
        await client.aclose()


async def test_blocking_commands_do_not_stall_the_shared_connection(
    pair: tuple[aredis.Redis, aredis.Redis],
) -> None:
    """A BLMOVE waiting on an empty list goes through the pool: other commands are answered meanwhile."""
    ours, theirs = pair
    blocked = asyncio.ensure_future(ours.blmove("empty", "target", 1.0, "LEFT", "RIGHT"))

    async def blocked_on_the_server() -> bool:
        return any(client["cmd"] == "blmove" for client in await theirs.client_list())

    await eventually(blocked_on_the_server, interval=0.005)
    async with asyncio.timeout(0.5):
        await ours.set("k", b"v")
    assert not blocked.done()
    assert await blocked is None


async def test_watch_uses_redis_pys_own_pipeline(pair: tuple[aredis.Redis, aredis.Redis]) -> None:
    """WATCH works (on a pooled connection): a change by someone else fails the transaction."""
    ours, theirs = pair
    await ours.set("w", b"1")
    async with ours.pipeline(transaction=True) as pipe:
        await pipe.watch("w")
        await theirs.set("w", b"2")
        pipe.multi()
        pipe.set("w", b"3")
        with pytest.raises(WatchError):
            await pipe.execute()
    assert await ours.get("w") == b"2"


async def test_the_database_of_the_url_is_selected(clean_redis: redis.Redis, redis_url: str) -> None:
    """Commands land in the URL's database, not database 0."""
    client = async_client(redis_url, max_connections=1, auto_pipeline=True)
    try:
        await client.set("selected", b"yes")
    finally:
        await client.aclose()
    assert clean_redis.get("selected") == b"yes"


async def test_run_commands_reads_the_same_shapes_on_either_client(
    pair: tuple[aredis.Redis, aredis.Redis],
) -> None:
    """run_commands answers the replies the worker reads (a hash as a dict, a count, a list) alike on the
    auto-pipelined connection (raw, without redis-py's callbacks) and on a plain client; a refused command
    stands in its place, or raises."""
    ours, theirs = pair
    await theirs.hset("h", mapping={"a": "1"})
    await theirs.set("s", "v")
    commands: list[Command] = [
        (("HGETALL", "h"), {}),
        (("EXISTS", "h"), {}),
        (("ZRANGE", "missing", 0, -1), {}),
        (("HGET", "s", "f"), {}),  # WRONGTYPE
        (("PUBLISH", "nobody", b"x"), {}),
    ]
    for client in (ours, theirs):
        replies = await run_commands(client, commands, raise_on_error=False)
        assert replies[:3] == [{b"a": b"1"}, 1, []]
        assert isinstance(replies[3], ResponseError) and "WRONGTYPE" in str(replies[3])
        assert replies[4] == 0
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await run_commands(client, commands)
