"""Client disconnects: a queued job is withdrawn and deleted and its credit hold released, a started one
is cancelled (published on the cancel channel and marked) and its hold left to its worker, and the
request's tasks all end."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aredis
from rq.job import Job

from ingress import job_control
from ingress.relay import CompletionRelay
from shared import credits, keys
from tests.ingress.conftest import MESSAGES, MODEL, Ingress, asgi_chat
from tests.waiting import eventually

STREAM_BODY = {"model": MODEL, "messages": MESSAGES, "stream": True}


async def queued_ids(redis: aredis.Redis) -> list[bytes]:
    ids: list[bytes] = await redis.lrange(keys.rq_queue_key("simulated"), 0, -1)  # type: ignore[assignment]
    return ids


async def wait_until_queued(redis: aredis.Redis) -> bytes:
    ids = await eventually(lambda: queued_ids(redis))
    return ids[0]


async def test_disconnect_while_queued_withdraws_the_job(ingress: Ingress) -> None:
    """A client leaving before any worker took its job gets the job removed from the queue and deleted."""
    call = asgi_chat(ingress, {"model": MODEL, "messages": MESSAGES})
    running = asyncio.create_task(call.run())
    job_id = await wait_until_queued(ingress.redis)
    assert await ingress.redis.exists(Job.key_for(job_id.decode()))
    call.disconnected.set()
    await asyncio.wait_for(running, 5)
    assert call.sent == []
    assert await queued_ids(ingress.redis) == []
    assert not await ingress.redis.exists(Job.key_for(job_id.decode()))
    assert not await ingress.redis.exists(keys.cancelled_marker(job_id.decode()))
    assert (await credits.get_balance(ingress.redis, "acct-test")).reserved == 0  # nothing ran: released


async def test_disconnect_during_stream_cancels_the_job(ingress: Ingress) -> None:
    """A client leaving mid-stream makes the ingress publish the job id on the cancel channel and set
    the cancelled marker."""
    cancels = ingress.redis.pubsub()
    await cancels.subscribe(keys.CANCEL_CHANNEL)
    await cancels.get_message(timeout=1)  # subscribe confirmation
    try:
        call = asgi_chat(ingress, STREAM_BODY)
        running = asyncio.create_task(call.run())
        taken = await ingress.worker.take()
        await ingress.worker.start(taken)
        await ingress.worker.chunk(taken, "a")
        await asyncio.wait_for(call.body_sent.wait(), 5)
        call.disconnected.set()
        await asyncio.wait_for(running, 5)
        message = await cancels.get_message(ignore_subscribe_messages=True, timeout=5)
        assert message is not None and message["data"] == taken.id.encode()
        assert await ingress.redis.ttl(keys.cancelled_marker(taken.id)) > 0
        assert call.status == 200
    finally:
        await cancels.aclose()  # type: ignore[no-untyped-call]


async def test_disconnect_while_waiting_for_json_cancels_the_job(
    ingress: Ingress, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-stream client leaving after the job started also cancels it (http.disconnect is watched)."""
    started = asyncio.Event()
    wait_for_start = CompletionRelay.wait_for_start

    async def observed_wait_for_start(relay: CompletionRelay) -> bool:
        if await wait_for_start(relay):
            started.set()
            return True
        return False

    monkeypatch.setattr(CompletionRelay, "wait_for_start", observed_wait_for_start)
    call = asgi_chat(ingress, {"model": MODEL, "messages": MESSAGES})
    running = asyncio.create_task(call.run())
    taken = await ingress.worker.take()
    await ingress.worker.start(taken)
    await asyncio.wait_for(started.wait(), 5)  # the ingress has the S frame: the job started
    call.disconnected.set()
    await asyncio.wait_for(running, 5)
    assert call.sent == []
    assert await ingress.redis.exists(keys.cancelled_marker(taken.id))


async def test_disconnect_after_take_but_before_start_cancels(ingress: Ingress) -> None:
    """If a worker holds the job but has not started it, the LREM finds nothing and a cancel is left."""
    call = asgi_chat(ingress, {"model": MODEL, "messages": MESSAGES})
    running = asyncio.create_task(call.run())
    taken = await ingress.worker.take()
    call.disconnected.set()
    await asyncio.wait_for(running, 5)
    assert await ingress.redis.exists(keys.cancelled_marker(taken.id))


async def test_finished_request_leaves_no_task_and_no_registration(ingress: Ingress) -> None:
    """After a request completes, the hub forgets it and no task of the request is left running."""
    before = {t for t in asyncio.all_tasks() if not t.done()}
    request = ingress.chat_task()
    taken = await ingress.worker.take()
    await ingress.worker.start(taken)
    await ingress.worker.done(taken, "ok")
    assert (await request).status_code == 200
    this = asyncio.current_task()
    await eventually(lambda: not {t for t in asyncio.all_tasks() if not t.done()} - before - {this})
    assert list(ingress.app.state.ingress.hub.open_subscriptions()) == []
    assert not await ingress.redis.exists(keys.cancelled_marker(taken.id))


async def test_a_client_leaving_after_the_start_leaves_the_hold_to_the_worker(ingress: Ingress) -> None:
    """A client leaving mid-stream after its job started leaves the credit hold held for the worker to
    charge what the job produced; a worker that never settles it (killed) leaves it to the sweep, which
    releases it once its deadline passed."""
    call = asgi_chat(ingress, STREAM_BODY)
    running = asyncio.create_task(call.run())
    taken = await ingress.worker.take()
    await ingress.worker.start(taken)
    await ingress.worker.chunk(taken, "a")
    await asyncio.wait_for(call.body_sent.wait(), 5)
    call.disconnected.set()
    await asyncio.wait_for(running, 5)
    assert await ingress.redis.exists(keys.cancelled_marker(taken.id))
    assert (await credits.get_balance(ingress.redis, "acct-test")).reserved > 0
    [reservation_id] = await ingress.redis.zrange(keys.CREDIT_RESERVATIONS, 0, -1)
    # Nobody renews its lease (the worker was killed): its deadline passes.
    await ingress.redis.hset(keys.credit_reservation(reservation_id.decode()), "deadline", 0)
    await ingress.redis.zadd(keys.CREDIT_RESERVATIONS, {reservation_id: 0})
    assert await credits.sweep_expired(ingress.redis) == 1
    balance = await credits.get_balance(ingress.redis, "acct-test")
    assert (balance.reserved, balance.spent) == (0, 0)


async def test_a_client_leaving_before_the_start_releases_the_hold_before_the_cancel(
    ingress: Ingress, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client leaving while a worker holds its job unstarted gets the hold released before the cancel
    goes out: the worker's settlement of the cancelled job then finds it settled and charges nothing."""
    reserved_at_cancel: list[int] = []
    abandon = job_control.abandon

    async def observed_abandon(redis: aredis.Redis, pool: str, job_id: str, *, started: bool) -> bool:
        reserved_at_cancel.append((await credits.get_balance(redis, "acct-test")).reserved)
        return await abandon(redis, pool, job_id, started=started)

    monkeypatch.setattr(job_control, "abandon", observed_abandon)
    call = asgi_chat(ingress, {"model": MODEL, "messages": MESSAGES})
    running = asyncio.create_task(call.run())
    taken = await ingress.worker.take()
    call.disconnected.set()
    await asyncio.wait_for(running, 5)
    assert await ingress.redis.exists(keys.cancelled_marker(taken.id))
    assert reserved_at_cancel == [0]
    assert (await credits.get_balance(ingress.redis, "acct-test")).reserved == 0
