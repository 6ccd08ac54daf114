"""One pub/sub channel on a connection of its own, read straight off the socket.

redis-py's ``PubSub`` hands each message up through its reader task and five layers of Python
(``listen``, ``get_message``, ``parse_response``, its retry wrapper, the connection's read).  A
:class:`Subscriber` is an asyncio protocol: ``data_received`` parses what arrived with hiredis and gives
each message's data to a callback in the same pass of the event loop, with no task to wake
(``bench/pubsub_cost.py`` measures the difference).

The connection is made as :mod:`shared.redis_connect` makes any (the URL's host, a Unix socket or the
master the Sentinels name; TLS; ``HELLO 3`` with ``AUTH``; ``SELECT``), then ``SUBSCRIBE``;
:func:`subscribe` returns once Redis confirmed the subscription.  :attr:`Subscriber.closed` resolves when
the connection is gone, whatever ended it (Redis restarted or killed the client, the network, or
:meth:`Subscriber.close`): the caller subscribes again.  A frozen Redis sends nothing and is noticed by
the caller's own timers, as with redis-py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import hiredis
import redis.asyncio as aredis
from redis.exceptions import ConnectionError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.redis_connect import RedisProtocol, handshake_commands, open_protocol

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0  # seconds to connect and have the subscription confirmed
_MESSAGE = b"message"
_SUBSCRIBE = b"subscribe"


class Subscriber(RedisProtocol):
    """The connection of one subscription: each message's data goes to ``on_message``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_message: Callable[[bytes], None]) -> None:
        super().__init__()
        self._on_message = on_message
        self._handshake_replies = 0  # replies to the handshake still to come before the confirmation
        self.subscribed: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def start(self, handshake: list[tuple[Any, ...]], channel: str) -> None:
        """Send the handshake and ``SUBSCRIBE channel`` in one write."""
        assert self._transport is not None
        self._handshake_replies = len(handshake)
        commands = [*handshake, ("SUBSCRIBE", channel)]
        self._transport.write(b"".join(bytes(hiredis.pack_command(c)) for c in commands))

    # --- asyncio.Protocol ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self._drop(ConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if isinstance(reply, list) and len(reply) == 3 and reply[0] == _MESSAGE:
                try:
                    self._on_message(reply[2])
                except Exception:  # a bug in the consumer must not take the subscription down
                    log.exception("a pub/sub message's handler failed")
            elif isinstance(reply, hiredis.ReplyError):
                self._drop(ResponseError(str(reply)))
                return
            elif self._handshake_replies:
                self._handshake_replies -= 1
            elif isinstance(reply, list) and reply[:1] == [_SUBSCRIBE] and not self.subscribed.done():
                self.subscribed.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"Connection to Redis lost: {exc or 'closed'}"))
        if not self.closed.done():
            self.closed.set_result(None)

    # --- internals ----------------------------------------------------------------------------------

    def _drop(self, error: Exception) -> None:
        self._fail(error)
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, error: Exception) -> None:
        if not self.subscribed.done():
            self.subscribed.set_exception(error)


async def subscribe(
    client: aredis.Redis,
    channel: str,
    on_message: Callable[[bytes], None],
    *,
    within: float = CONNECT_TIMEOUT,
) -> Subscriber:
    """A :class:`Subscriber` of ``channel`` on the Redis ``client`` names, confirmed; redis-py's
    ``ConnectionError``, ``TimeoutError`` or ``ResponseError`` (e.g. a wrong password) otherwise."""
    loop = asyncio.get_running_loop()
    subscriber = await open_protocol(client, lambda: Subscriber(loop, on_message), within)
    subscriber.start(handshake_commands(client), channel)
    try:
        async with asyncio.timeout(within):
            await asyncio.shield(subscriber.subscribed)
    except TimeoutError as exc:
        subscriber.subscribed.cancel()  # nobody will read what the closing connection would set on it
        subscriber.close()
        raise RedisTimeoutError("Timed out subscribing on Redis.") from exc
    except BaseException:
        subscriber.subscribed.cancel()
        subscriber.close()
        raise
    return subscriber
