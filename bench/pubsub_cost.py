"""What one pub/sub message costs its reader: redis-py's ``PubSub`` (a reader task, ``listen``) against
:class:`shared.redis_subscriber.Subscriber` (hiredis in ``data_received``), one message at a time as a
lone request's frames arrive, in one process, alternating.

    python -m bench.pubsub_cost --redis-url redis://127.0.0.1:PORT/0 [--messages 20000] [--repeat 3]

Each round publishes a 100-byte message and waits until the reader has it: CPU and wall time per round
include the publisher's own (the same for both readers), so the difference between the two lines is
the reader's.  Use a Redis of one's own.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aredis

from shared.redis_subscriber import subscribe

CHANNEL = "bench:pubsub-cost"
PAYLOAD = b"x" * 100

Reader = Callable[[aredis.Redis, asyncio.Event], Awaitable[Callable[[], Awaitable[None]]]]


async def redis_py_reader(client: aredis.Redis, heard: asyncio.Event) -> Callable[[], Awaitable[None]]:
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(CHANNEL)

    async def read() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                heard.set()

    task = asyncio.create_task(read())

    async def stop() -> None:
        task.cancel()
        await pubsub.aclose()

    return stop


async def subscriber_reader(client: aredis.Redis, heard: asyncio.Event) -> Callable[[], Awaitable[None]]:
    subscriber = await subscribe(client, CHANNEL, lambda data: heard.set())

    async def stop() -> None:
        subscriber.close()

    return stop


async def per_message(url: str, reader: Reader, messages: int) -> tuple[float, float]:
    """Microseconds of CPU and of wall time per published-and-heard message."""
    client = aredis.Redis.from_url(url)
    heard = asyncio.Event()
    stop = await reader(client, heard)
    try:
        for _ in range(100):  # warm up
            heard.clear()
            await client.publish(CHANNEL, PAYLOAD)
            await heard.wait()
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(messages):
            heard.clear()
            await client.publish(CHANNEL, PAYLOAD)
            await heard.wait()
        return (time.process_time() - cpu) / messages * 1e6, (time.perf_counter() - wall) / messages * 1e6
    finally:
        await stop()
        await client.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"redis-py PubSub": [], "Subscriber": []}
    for _ in range(args.repeat):
        results["redis-py PubSub"].append(await per_message(args.redis_url, redis_py_reader, args.messages))
        results["Subscriber"].append(await per_message(args.redis_url, subscriber_reader, args.messages))
    for name, runs in results.items():
        cpu = statistics.median(r[0] for r in runs)
        wall = statistics.median(r[1] for r in runs)
        print(f"{name:16} {cpu:6.1f} us CPU, {wall:6.1f} us wall per message (median of {args.repeat})")


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
