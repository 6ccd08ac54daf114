"""The reply hub: one pub/sub connection per ingress process, fanning frames out to waiting requests.

At start-up the hub subscribes to :func:`shared.keys.reply_channel` of this process.  A request
registers its id *before* its job is enqueued and gets a :class:`Subscription` whose queue receives, in
order and once each (a worker retries a publish whose reply it lost, so a frame may come twice), the
request's frames and possibly one :class:`~shared.errors.AIORouterError` (sequence gap,
lost worker, lost Redis connection) or :data:`CLIENT_GONE`.  Frames for ids nobody waits for are dropped.

A stream's client that does not read makes its relay wait in ``send`` while frames pile up in the queue.
What waits there is bounded: once more than ``buffer_limit`` bytes of ``C`` payloads wait behind a
blocked relay, or a reader has taken nothing for ``client_stall_timeout`` while frames wait
(:meth:`ReplyHub.check_readers`, on the watchdog's timer), the subscription drops what it holds and
interrupts its relay (:meth:`Subscription.interrupt`), which ends the response and cancels the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import redis.asyncio as aredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ingress.background import stop_task
from shared import events, keys
from shared.errors import AIORouterError, ServiceUnavailable
from shared.events import Frame, FrameError
from shared.redis_subscriber import Subscriber, subscribe

log = logging.getLogger(__name__)


class ClientGone:
    """Queued when the client disconnected: the request should abandon its job and stop."""


CLIENT_GONE: Final = ClientGone()


class Silence:
    """Queued by a stream's relay for itself (:class:`ingress.relay.SilenceTimer`): no frame came for one
    wait, time for a ping or, after long enough, the stall error."""


SILENCE: Final = Silence()
Delivery = Frame | AIORouterError | ClientGone | Silence

DEFAULT_BUFFER_LIMIT: Final = 1024 * 1024
_RECONNECT_PAUSE = 0.5
_CONNECTION_LOST = "Lost the connection to the queue; retry the request."


@dataclass(eq=False, slots=True)
class Subscription:
    request_id: str
    buffer_limit: int = DEFAULT_BUFFER_LIMIT  # bytes of C payloads that may wait behind a blocked relay
    queue: asyncio.Queue[Delivery] = field(default_factory=asyncio.Queue)
    next_seq: int = 0
    worker: str | None = None  # set by the S frame
    closed: bool = False  # a final frame or an error was queued; nothing more will be
    queued_bytes: int = 0  # C payload bytes delivered so far
    taken_bytes: int = 0  # C payload bytes the relay took so far (it adds them)
    relay_task: asyncio.Task[Any] | None = None  # the relay, while it streams: what an interrupt cancels
    too_slow: bool = False  # the client fell too far behind: its relay was interrupted
    heard_at: float = 0.0  # loop time at which the hub last delivered a frame (ingress.relay.SilenceTimer)
    taken_seen: int = 0  # ``taken_bytes`` at the reader check before, and for how long it has not moved
    stalled_for: float = 0.0

    def fail(self, error: AIORouterError) -> None:
        """End the request with ``error`` unless it already ended."""
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(error)

    def client_gone(self) -> None:
        self.queue.put_nowait(CLIENT_GONE)

    def interrupt(self) -> None:
        """The client is too far behind: drop what waits for it and cancel its relay."""
        self.too_slow = self.closed = True
        while not self.queue.empty():
            self.queue.get_nowait()
        if self.relay_task is not None:
            self.relay_task.cancel()

    def deliver(self, frame: Frame) -> None:
        if self.closed:
            return
        if frame.kind == events.CHUNKS:
            self.queued_bytes += len(frame.payload)
            waiting = self.queued_bytes - self.taken_bytes  # C bytes not taken yet, this frame's included
            if waiting > self.buffer_limit and waiting > len(frame.payload):  # and not this frame alone
                self.interrupt()
                return
        if frame.seq != self.next_seq:
            if frame.seq < self.next_seq:  # a worker's retried publish of a frame that had landed
                return
            self.fail(
                AIORouterError(f"Lost frames of this response (expected #{self.next_seq}, got #{frame.seq}).")
            )
            return
        self.next_seq += 1
        if frame.kind == events.START:
            self.worker = frame.meta.get("worker")
        elif frame.is_final:
            self.closed = True
        self.queue.put_nowait(frame)


class ReplyHub:
    def __init__(
        self,
        redis: aredis.Redis,
        ingress_id: str,
        *,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        client_stall_timeout: float = 30.0,
        before_resubscribe: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.channel = keys.reply_channel(ingress_id)
        self._before_resubscribe = before_resubscribe
        self._buffer_limit = buffer_limit
        self._client_stall_timeout = client_stall_timeout
        self._redis = redis
        self._subscriber: Subscriber | None = None  # the channel's connection, while it is up
        self._subscriptions: dict[str, Subscription] = {}
        self._reader: asyncio.Task[None] | None = None
        self._stopping = False
        self._refusal: Callable[[], AIORouterError] | None = None  # set by refuse(): how new requests end

    async def start(self) -> None:
        self._subscriber = await subscribe(self._redis, self.channel, self.route)
        self._reader = asyncio.create_task(self._read_forever(), name=f"reply-hub {self.channel}")

    async def stop(self) -> None:
        self._stopping = True
        if self._reader is not None:
            await stop_task(self._reader)
        if self._subscriber is not None:
            self._subscriber.close()
            self._subscriber = None

    @property
    def listening(self) -> bool:
        """Whether the reply channel is subscribed: a job's frames can reach this process now."""
        return self._subscriber is not None

    def register(self, request_id: str) -> Subscription:
        subscription = Subscription(request_id, self._buffer_limit)
        self._subscriptions[request_id] = subscription
        if self._refusal is not None:
            subscription.fail(self._refusal())
        return subscription

    def refuse(self, error: Callable[[], AIORouterError]) -> int:
        """End every open request with a fresh ``error()``, and each one registered from now on (the
        ingress is shutting down); how many were open."""
        self._refusal = error
        ended = 0
        for subscription in self.open_subscriptions():
            subscription.fail(error())
            ended += 1
        return ended

    def unregister(self, subscription: Subscription) -> None:
        if self._subscriptions.get(subscription.request_id) is subscription:
            del self._subscriptions[subscription.request_id]

    def open_subscriptions(self) -> Iterator[Subscription]:
        return (s for s in list(self._subscriptions.values()) if not s.closed)

    def check_readers(self, elapsed: float) -> int:
        """Interrupt the streams whose client took nothing for ``client_stall_timeout`` while frames
        waited for it; call every ``elapsed`` seconds.  How many were interrupted."""
        interrupted = 0
        for subscription in self.open_subscriptions():
            if subscription.relay_task is None or subscription.queued_bytes == subscription.taken_bytes:
                subscription.stalled_for = 0.0
            elif subscription.taken_bytes != subscription.taken_seen:
                subscription.taken_seen, subscription.stalled_for = subscription.taken_bytes, 0.0
            else:
                subscription.stalled_for += elapsed
                if subscription.stalled_for >= self._client_stall_timeout:
                    subscription.interrupt()
                    interrupted += 1
        return interrupted

    def route(self, message: bytes) -> None:
        """Hand each frame of one published message (a frame, or a bundle) to the request it belongs to."""
        try:
            frames = events.frames_of(message)
        except FrameError:
            log.warning("dropping a malformed message on %s: %r", self.channel, message[:80])
            return
        now = asyncio.get_running_loop().time()
        for data in frames:
            try:
                frame = events.decode(data)
            except FrameError:
                log.warning("dropping a malformed frame on %s: %r", self.channel, data[:80])
                continue
            subscription = self._subscriptions.get(frame.request_id)
            if subscription is not None:
                subscription.heard_at = now
                subscription.deliver(frame)

    async def _read_forever(self) -> None:
        """Keep the channel subscribed: its connection delivers the messages (:meth:`route`, from the
        connection's own callback); when it is lost, the open requests fail and it is made again."""
        while not self._stopping:
            try:
                if self._subscriber is None:
                    self._subscriber = await subscribe(self._redis, self.channel, self.route)
                await self._subscriber.closed
                self._subscriber = None
                raise RedisConnectionError("the reply channel's connection closed")
            except RedisError as exc:
                if self._stopping:
                    return
                failed = 0
                for subscription in self.open_subscriptions():
                    subscription.fail(ServiceUnavailable(_CONNECTION_LOST))
                    failed += 1
                log.warning("reply hub lost Redis (%s); failed %d open request(s), reconnecting", exc, failed)
                await asyncio.sleep(_RECONNECT_PAUSE)
                if self._before_resubscribe is not None:
                    # The failed requests' holds are released before the channel can hear again: a job of
                    # theirs that ends later finds its hold released, or nobody subscribed (and is not
                    # charged either way: credit_settle.lua).
                    with contextlib.suppress(RedisError):
                        await self._before_resubscribe()
