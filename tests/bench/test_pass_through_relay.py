"""The pass-through relay in front of the simulated upstream, both on real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bench.loadgen import LoadSpec, run_load
from bench.relay import Relay, start_relay
from bench.upstream import Upstream


@pytest.fixture
async def relay(upstream: Upstream) -> AsyncIterator[Relay]:
    server = await start_relay(upstream.base_url)
    yield server
    await server.close()


async def test_relay_forwards_every_stream_chunk_in_order(upstream: Upstream, relay: Relay) -> None:
    """Streams through the relay arrive whole: every chunk in order, one finish_reason, then [DONE]."""
    spec = LoadSpec(relay.base_url, model="sim?tokens=50", stream=True, clients=4, requests_per_client=10)
    result = await run_load(spec)
    assert (result.ok, result.errors, result.chunks) == (40, {}, 40 * 50)
    assert upstream.stats.streams == 40


async def test_relay_streams_each_chunk_as_it_comes(relay: Relay) -> None:
    """The relay does not buffer a stream: the first token arrives long before the last one is made."""
    spec = LoadSpec(relay.base_url, model="sim?tokens=5&itl_ms=60", stream=True, requests_per_client=1)
    result = await run_load(spec)
    assert result.ok == 1 and result.ttft_ms is not None and result.latency_ms is not None
    assert result.latency_ms["p50"] - result.ttft_ms["p50"] >= 200  # four inter-token gaps of 60 ms


async def test_relay_keeps_its_upstream_connections_alive(upstream: Upstream, relay: Relay) -> None:
    """One shared client reuses its upstream connections: no more of them than requests at once."""
    spec = LoadSpec(relay.base_url, model="sim?tokens=4", clients=4, requests_per_client=25)
    result = await run_load(spec)
    assert (result.ok, result.errors) == (100, {})
    assert upstream.stats.requests == 100
    assert upstream.stats.connections <= 4


async def test_relay_passes_the_upstream_status_and_body_through(upstream: Upstream, relay: Relay) -> None:
    """An upstream error reaches the client with its status and its OpenAI error envelope unchanged."""
    body = {"model": "sim?status=503", "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient() as client:
        relayed = await client.post(f"{relay.base_url}/chat/completions", json=body)
        direct = await client.post(f"{upstream.base_url}/chat/completions", json=body)
    assert relayed.status_code == direct.status_code == 503
    assert relayed.headers["content-type"] == "application/json"
    assert relayed.json() == direct.json()
