"""The reply hub: frames reach the request registered for them, in order; gaps, strangers and
malformed messages are handled; a lost pub/sub connection fails open requests and is re-established."""

from __future__ import annotations

import asyncio

import redis.asyncio as aredis

from ingress.reply_hub import CLIENT_GONE, Delivery, ReplyHub, Subscription
from shared import events
from shared.errors import AIORouterError, IngressStopping, WorkerLost
from tests.ingress.conftest import IngressFactory
from tests.ingress.test_app import assert_error
from tests.waiting import eventually


def frame(kind: bytes, seq: int, request_id: str = "r1", **meta: object) -> events.Frame:
    return events.decode(events.encode(kind, request_id, seq, dict(meta) or None, b"p"))


def drain(subscription: Subscription) -> list[Delivery]:
    items: list[Delivery] = []
    while not subscription.queue.empty():
        items.append(subscription.queue.get_nowait())
    return items


def test_frames_in_order_are_queued_and_the_worker_is_recorded() -> None:
    """S, C, D in sequence are all queued; S names the worker; D closes the subscription."""
    subscription = Subscription("r1")
    for item in (frame(events.START, 0, worker="w-1"), frame(events.CHUNKS, 1), frame(events.DONE, 2)):
        subscription.deliver(item)
    assert [getattr(f, "kind", None) for f in drain(subscription)] == [
        events.START,
        events.CHUNKS,
        events.DONE,
    ]
    assert subscription.worker == "w-1" and subscription.closed


def test_sequence_gap_fails_the_request_once() -> None:
    """A skipped seq queues one 500 error and nothing after it."""
    subscription = Subscription("r1")
    subscription.deliver(frame(events.START, 0))
    subscription.deliver(frame(events.CHUNKS, 2))
    subscription.deliver(frame(events.CHUNKS, 3))
    items = drain(subscription)
    assert len(items) == 2 and isinstance(items[1], AIORouterError) and items[1].status == 500


def test_fail_after_final_frame_is_ignored() -> None:
    """Once a final frame is queued, a late watchdog failure adds nothing."""
    subscription = Subscription("r1")
    subscription.deliver(frame(events.START, 0))
    subscription.deliver(frame(events.ERROR, 1, status=429, type="rate_limit_exceeded"))
    subscription.fail(WorkerLost())
    assert [getattr(i, "kind", None) for i in drain(subscription)] == [events.START, events.ERROR]


def test_client_gone_is_queued() -> None:
    """A disconnect is delivered as the CLIENT_GONE marker."""
    subscription = Subscription("r1")
    subscription.client_gone()
    assert drain(subscription) == [CLIENT_GONE]


async def test_refuse_ends_the_open_requests_and_every_later_one(aredis_client: aredis.Redis) -> None:
    """After ``refuse`` (a shutdown's grace is over) each open request and each one registered later gets
    its own error; a request that already ended gets none."""
    hub = ReplyHub(aredis_client, "ingress-refuse")
    open_one, ended = hub.register("r1"), hub.register("r2")
    ended.deliver(frame(events.DONE, 0, request_id="r2"))
    assert hub.refuse(IngressStopping) == 1
    later = hub.register("r3")
    (first,), (second,) = drain(open_one), drain(later)
    assert isinstance(first, IngressStopping) and isinstance(second, IngressStopping) and first is not second
    assert [getattr(item, "kind", None) for item in drain(ended)] == [events.DONE]


async def test_route_ignores_strangers_and_garbage(aredis_client: aredis.Redis) -> None:
    """Frames for unregistered ids and non-frames are dropped; registered ids get theirs."""
    hub = ReplyHub(aredis_client, "test-ingress")
    mine = hub.register("mine")
    hub.route(events.encode(events.START, "stranger", 0))
    hub.route(b"not a frame")
    hub.route(events.encode(events.START, "mine", 0))
    assert len(drain(mine)) == 1
    hub.unregister(mine)
    hub.route(events.encode(events.CHUNKS, "mine", 1))
    assert drain(mine) == []


async def test_route_hands_out_each_frame_of_a_bundle(aredis_client: aredis.Redis) -> None:
    """A bundle's frames reach their requests in the bundle's order; a malformed frame inside is dropped
    alone, and a malformed bundle is dropped whole."""
    hub = ReplyHub(aredis_client, "test-ingress")
    one, two = hub.register("one"), hub.register("two")
    hub.route(
        events.bundle(
            [
                events.encode(events.START, "one", 0),
                events.encode(events.START, "two", 0),
                b"not a frame",
                events.encode(events.CHUNKS, "one", 1, None, b"data: {}\n\n"),
                events.encode(events.DONE, "two", 1),
            ]
        )
    )
    hub.route(events.bundle([events.encode(events.CHUNKS, "two", 2)])[:-3])
    assert [(f.kind, f.seq) for f in drain(one) if isinstance(f, events.Frame)] == [(b"S", 0), (b"C", 1)]
    assert [(f.kind, f.seq) for f in drain(two) if isinstance(f, events.Frame)] == [(b"S", 0), (b"D", 1)]


async def test_hub_receives_published_frames(aredis_client: aredis.Redis) -> None:
    """After start(), frames published on the hub's channel reach the registered subscription."""
    hub = ReplyHub(aredis_client, "test-ingress")
    await hub.start()
    try:
        subscription = hub.register("r1")
        await aredis_client.publish(hub.channel, events.encode(events.START, "r1", 0, {"worker": "w"}))
        received = await asyncio.wait_for(subscription.queue.get(), 5)
        assert isinstance(received, events.Frame) and received.kind == events.START
    finally:
        await hub.stop()


async def test_lost_pubsub_connection_fails_open_requests_and_recovers(
    ingress_factory: IngressFactory,
) -> None:
    """Killing the hub's pub/sub connection fails waiting requests with 503, and later requests work."""
    async with ingress_factory() as ingress:
        request = ingress.chat_task()
        taken = await ingress.worker.take()
        await ingress.worker.start(taken)
        channel = taken.job.reply_to
        killed = 0
        for client in await ingress.redis.client_list(_type="pubsub"):
            if client.get("db") == str(ingress.redis.connection_pool.connection_kwargs.get("db", 0)):
                killed += await ingress.redis.client_kill_filter(_id=client["id"])
        assert killed == 1
        response = await asyncio.wait_for(request, 10)
        assert_error(response, 503, "service_unavailable", "service_unavailable")

        async def resubscribed() -> bool:  # the hub re-subscribes on its own
            return await ingress.redis.pubsub_numsub(channel) == [(channel.encode(), 1)]

        await eventually(resubscribed)
        request = ingress.chat_task()
        taken = await ingress.worker.take()
        await ingress.worker.start(taken)
        await ingress.worker.done(taken, "back")
        assert (await asyncio.wait_for(request, 10)).status_code == 200


async def test_while_the_reply_channel_is_down_requests_are_refused_at_once(
    ingress_factory: IngressFactory,
) -> None:
    """Between losing its pub/sub connection and subscribing again, the ingress answers 503 at once
    (Retry-After 1) and enqueues nothing: a job's frames would reach nobody, its worker would drop it, and
    the client would wait for a start that never comes."""
    from ingress.context import ingress_context

    async with ingress_factory() as ingress:
        hub = ingress_context(ingress.app).hub
        await kill_pubsub_connections(ingress.redis)
        await eventually(lambda: not hub.listening)
        refused = await ingress.chat()
        assert_error(refused, 503, "service_unavailable", "service_unavailable")
        assert refused.headers["retry-after"] == "1" and "reconnecting" in refused.json()["error"]["message"]
        assert await ingress.redis.llen("rq:queue:simulated") == 0
        await eventually(lambda: hub.listening)


async def test_holds_of_failed_requests_go_before_the_channel_hears_again(
    aredis_client: aredis.Redis,
) -> None:
    """After losing its connection the hub runs ``before_resubscribe`` (the ingress' deferred releases)
    before it subscribes again, so a late answer of a request it failed finds its hold released or
    nobody listening, and is never charged (credit_settle.lua)."""
    subscribers_seen: list[int] = []
    hub: ReplyHub | None = None

    async def before() -> None:
        assert hub is not None
        subscribers_seen.append(dict(await aredis_client.pubsub_numsub(hub.channel))[hub.channel.encode()])

    hub = ReplyHub(aredis_client, "hub-test", before_resubscribe=before)
    await hub.start()
    try:
        await kill_pubsub_connections(aredis_client)
        await eventually(lambda: hub.listening and subscribers_seen)
        assert subscribers_seen == [0]
    finally:
        await hub.stop()


async def kill_pubsub_connections(redis: aredis.Redis) -> int:
    """Cut the pub/sub connections on ``redis``'s database (the test's own)."""
    db = str(redis.connection_pool.connection_kwargs.get("db", 0))
    killed = 0
    for client in await redis.client_list(_type="pubsub"):
        if client.get("db") == db:
            killed += await redis.client_kill_filter(_id=client["id"])
    return killed
