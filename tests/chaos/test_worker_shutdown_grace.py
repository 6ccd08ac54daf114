"""SIGTERM to a worker running streams: those that end within ``worker_shutdown_grace`` finish, those
still running at its end get a clean ``worker_lost`` error event, and every credit hold is released."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest
import redis.asyncio as aredis

from shared import credits
from tests.chaos.configs import slow_model_config
from tests.e2e.running_system import RunningSystem, running_system

GRACE = 8.0
CONFIG = slow_model_config(
    f"""
worker_heartbeat_interval = 0.5
worker_dead_after = 2.0
worker_shutdown_grace = {GRACE}
""",
    output_price=1.0,
)
SHORT_TOKENS = 50  # 5 s at 10 tokens/s: ends within the grace
LONG_TOKENS = 200  # 20 s: outlives the grace (and would end within the old fixed 30 s)
STREAM_DEADLINE = 60.0


@dataclass
class Stream:
    tokens: int
    first_chunk: threading.Event = field(default_factory=threading.Event)
    finished: bool = False
    error_code: str | None = None


def _read(system: RunningSystem, stream: Stream) -> None:
    client = system.client(timeout=STREAM_DEADLINE)
    try:
        chunks = client.chat.completions.create(
            model="chaos/slow",
            messages=[{"role": "user", "content": "Write at length."}],
            stream=True,
            max_tokens=stream.tokens,
        )
        for _ in chunks:
            stream.first_chunk.set()
        stream.finished = True
    except openai.APIError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        stream.error_code = str(body.get("code"))
    finally:
        stream.first_chunk.set()


async def _fund(redis_url: str) -> None:
    client = aredis.Redis.from_url(redis_url)
    try:
        await credits.add_credit(client, "e2e", 10 * credits.MICROS_PER_USD)
    finally:
        await client.aclose()


async def _reserved(redis_url: str) -> int:
    client = aredis.Redis.from_url(redis_url)
    try:
        return (await credits.get_balance(client, "e2e")).reserved
    finally:
        await client.aclose()


@pytest.mark.timeout(180)
def test_sigterm_lets_streams_within_the_grace_finish_and_ends_the_rest_cleanly(
    redis_url: str, tmp_path: Path
) -> None:
    """With an 8 s grace, 5 s streams running at SIGTERM finish with [DONE], 20 s streams end with a
    worker_lost error event, and the account holds no credit afterwards."""
    with running_system(config_toml=CONFIG, redis_url=redis_url, workdir=tmp_path, pools=["slow"]) as system:
        asyncio.run(_fund(redis_url))
        streams = [Stream(SHORT_TOKENS) for _ in range(3)] + [Stream(LONG_TOKENS) for _ in range(2)]
        readers = [threading.Thread(target=_read, args=(system, s)) for s in streams]
        for reader in readers:
            reader.start()
        for stream in streams:
            assert stream.first_chunk.wait(STREAM_DEADLINE)
        (worker,) = system.workers("slow")
        worker.process.send_signal(signal.SIGTERM)
        for reader in readers:
            reader.join(STREAM_DEADLINE)
        assert [(s.finished, s.error_code) for s in streams] == [(True, None)] * 3 + [
            (False, "worker_lost")
        ] * 2, system.logs()
        assert worker.process.wait(GRACE + 20) == 0
        deadline = time.monotonic() + 10
        while asyncio.run(_reserved(redis_url)) != 0:
            assert time.monotonic() < deadline, "a credit hold was not released"
            time.sleep(0.1)
