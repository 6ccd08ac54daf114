"""A client that goes away cancels its job: the worker stops it and frees the slot, and the request is
charged for what its job produced once a worker started it, nothing when it was still queued."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from shared import credits, keys, usage
from shared.redis_client import plain_async_client, sync_client
from tests.e2e.running_system import RunningSystem, SystemLauncher
from tests.waiting import eventually_sync

# 10 tokens/s: a 400-token answer would take 40 s, so a job that ends within seconds was cancelled.
INPUT_PRICE, OUTPUT_PRICE = 1000.0, 2000.0  # USD per million tokens: micro-USD per token
CONFIG = f"""
worker_heartbeat_interval = 0.5
worker_dead_after = 3.0

[providers.slow]
kind = "simulated"
tokens_per_second = 10.0

[[models]]
id = "e2e/slow-lorem"
deployments = [{{ provider = "slow", upstream_model = "lorem" }}]

[[models]]
id = "e2e/priced-lorem"
input_price_per_m = {INPUT_PRICE}
output_price_per_m = {OUTPUT_PRICE}
deployments = [{{ provider = "slow", upstream_model = "lorem" }}]
"""
CANCELLED_WITHIN = 10.0
MAX_TOKENS = 200
CREDIT = 100_000_000  # micro-USD: 100 USD
PRICED_STREAM = {
    "model": "e2e/priced-lorem",
    "messages": [{"role": "user", "content": "go"}],
    "stream": True,
    "max_tokens": MAX_TOKENS,
}


@pytest.fixture(scope="module")
def system(launch_system: SystemLauncher) -> RunningSystem:
    """One worker running one job at a time (a second request waits on the queue); the test key's
    account ``e2e`` holds 100 USD."""
    running = launch_system(CONFIG, pools=["slow"], concurrency=1)

    async def fund() -> None:
        client = plain_async_client(running.redis_url)
        try:
            await credits.add_credit(client, "e2e", CREDIT)
        finally:
            await client.aclose()

    asyncio.run(fund())
    return running


@pytest.fixture
def store(system: RunningSystem) -> Iterator[redis.Redis]:
    client = sync_client(system.redis_url)
    try:
        yield client
    finally:
        client.close()


def balance(store: redis.Redis) -> credits.Balance:
    raw = store.hgetall(keys.credit_balance("e2e"))
    values = {name: int(raw.get(name.encode(), 0)) for name in ("balance", "reserved", "spent")}
    return credits.Balance("e2e", **values)


def usage_records(store: redis.Redis) -> list[usage.UsageRecord]:
    return [usage.UsageRecord.from_fields(fields) for _, fields in store.xrevrange(keys.usage_records("e2e"))]


def settled(store: redis.Redis) -> credits.Balance | None:
    """The account's credit once no request holds any."""
    now = balance(store)
    return now if now.reserved == 0 else None


def test_disconnect_mid_stream_stops_the_job(system: RunningSystem) -> None:
    """Closing the connection mid-stream removes the job from rq's started registry within seconds."""
    body = {"model": "e2e/slow-lorem", "messages": [{"role": "user", "content": "go"}], "stream": True}
    headers = {"Authorization": f"Bearer {system.api_key}"}
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", f"{system.base_url}/chat/completions", json=body | {"max_tokens": 400}, headers=headers
        ) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data: {"))
        assert system.started_jobs("slow"), "the job should be running while we read"
    eventually_sync(
        lambda: not system.started_jobs("slow"), within=CANCELLED_WITHIN
    )  # the worker stops the job
    completion = system.client(timeout=30).chat.completions.create(
        model="e2e/slow-lorem", messages=[{"role": "user", "content": "go"}], max_tokens=3
    )
    assert completion.choices[0].finish_reason == "length"  # the pool still serves after the cancellation


def read_chunks_and_leave(system: RunningSystem, count: int) -> None:
    """Stream a priced completion, read ``count`` content chunks, and close the connection."""
    headers = {"Authorization": f"Bearer {system.api_key}"}
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", f"{system.base_url}/chat/completions", json=PRICED_STREAM, headers=headers
        ) as response,
    ):
        assert response.status_code == 200
        seen = 0
        for line in response.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                seen += 1
                if seen == count:
                    return


def test_a_client_that_leaves_mid_stream_pays_for_the_tokens_produced(
    system: RunningSystem, store: redis.Redis
) -> None:
    """A paid client that reads some chunks of a stream and disconnects is charged its prompt and the
    tokens produced until the worker stopped: at least the chunks it saw, less than the whole answer;
    its hold is settled and one usage record says client_closed."""
    before = balance(store)
    records_before = len(usage_records(store))
    seen = 5
    read_chunks_and_leave(system, seen)
    after = eventually_sync(lambda: settled(store), within=CANCELLED_WITHIN)
    [record] = eventually_sync(lambda: usage_records(store)[: len(usage_records(store)) - records_before])
    assert record.status == usage.CLIENT_CLOSED
    assert seen <= record.completion_tokens < MAX_TOKENS
    prompt = credits.price_micros(record.prompt_tokens, INPUT_PRICE)
    charged = before.balance - after.balance
    assert charged == after.spent - before.spent == record.cost_micros
    assert charged == prompt + credits.price_micros(record.completion_tokens, OUTPUT_PRICE)
    assert prompt + credits.price_micros(seen, OUTPUT_PRICE) <= charged
    assert charged < prompt + credits.price_micros(MAX_TOKENS, OUTPUT_PRICE)


def test_a_client_that_leaves_while_its_job_is_queued_pays_nothing(
    system: RunningSystem, store: redis.Redis
) -> None:
    """A client that leaves while its job waits on the queue (the pool's one slot busy) has its job
    withdrawn and its hold released: nothing ran, nothing is charged, no usage record is written."""
    before = balance(store)
    records_before = len(usage_records(store))
    queue = keys.rq_queue_key("slow")
    headers = {"Authorization": f"Bearer {system.api_key}"}
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", f"{system.base_url}/chat/completions", json=PRICED_STREAM, headers=headers
        ) as busy,
    ):
        assert busy.status_code == 200
        lines = busy.iter_lines()  # kept: an iterator let go of closes the stream
        assert next(line for line in lines if line.startswith("data: {"))
        busy_hold = balance(store).reserved
        with queued_request(system, PRICED_STREAM):
            eventually_sync(lambda: store.llen(queue) == 1)
            assert balance(store).reserved > busy_hold  # the queued request holds its own
        eventually_sync(lambda: store.llen(queue) == 0)  # withdrawn
        eventually_sync(lambda: balance(store).reserved == busy_hold)  # its hold released, the busy one kept
        assert balance(store).spent == before.spent
    after = eventually_sync(lambda: settled(store), within=CANCELLED_WITHIN)
    [busy_record] = eventually_sync(
        lambda: usage_records(store)[: len(usage_records(store)) - records_before]
    )
    assert busy_record.status == usage.CLIENT_CLOSED  # only the job that ran is recorded, and charged
    assert after.spent - before.spent == busy_record.cost_micros


@contextmanager
def queued_request(system: RunningSystem, body: dict[str, object]) -> Iterator[None]:
    """A completion request sent on a raw socket, its connection closed on exit: a client that waits for
    its answer, then leaves."""
    origin = urlsplit(system.origin)
    payload = json.dumps(body).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {origin.netloc}\r\n"
        f"Authorization: Bearer {system.api_key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    with socket.create_connection((origin.hostname or "127.0.0.1", origin.port or 80), timeout=10) as client:
        client.sendall(head.encode() + payload)
        yield
