"""Provider-wide caps on the real Redis, shared by every worker process (here: two ProviderCaps on
separate clients): the concurrency cap, the calls-per-minute cap, waiting for room, and leases that free
the slots of a worker that died."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aredis

from shared import keys
from shared.errors import UpstreamUnavailable
from shared.settings import ProviderSettings
from workers.provider_caps import ProviderCaps


@pytest.fixture
async def other_process(aredis_client: aredis.Redis, redis_url: str) -> AsyncIterator[aredis.Redis]:
    """A second client, standing for another worker process."""
    client = aredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def provider(**caps: float) -> ProviderSettings:
    return ProviderSettings(name="capped", cap_wait=0.3, **caps)  # type: ignore[arg-type]


async def test_concurrency_cap_holds_across_processes(
    aredis_client: aredis.Redis, other_process: aredis.Redis
) -> None:
    """With max_concurrency=1, a job in another process is refused (provider_capacity, Retry-After)
    while the first holds the slot, and admitted once it is released."""
    settings = provider(max_concurrency=1)
    first, second = ProviderCaps(aredis_client, settings, 5.0), ProviderCaps(other_process, settings, 5.0)
    async with first.slot("job-1"):
        with pytest.raises(UpstreamUnavailable) as caught:
            async with second.slot("job-2"):
                pass
        assert caught.value.code == "provider_capacity" and caught.value.headers["Retry-After"] == "1"
    async with second.slot("job-2"):
        assert await aredis_client.zcard(keys.provider_slots("capped")) == 1
    assert await aredis_client.zcard(keys.provider_slots("capped")) == 0


async def test_a_job_over_the_cap_waits_briefly_for_room(
    aredis_client: aredis.Redis, other_process: aredis.Redis
) -> None:
    """A slot freed within cap_wait goes to the waiting job instead of failing it."""
    settings = ProviderSettings(name="capped", cap_wait=5.0, max_concurrency=1)
    first, second = ProviderCaps(aredis_client, settings, 5.0), ProviderCaps(other_process, settings, 5.0)
    admitted = asyncio.Event()

    async def wait_for_slot() -> None:
        async with second.slot("job-2"):
            admitted.set()

    async with first.slot("job-1"):
        waiter = asyncio.create_task(wait_for_slot())
        await asyncio.sleep(0.2)  # a pause in which a waiter that ignored the cap would get in
        assert not admitted.is_set()
    await asyncio.wait_for(waiter, 5)
    assert admitted.is_set()


async def test_requests_per_minute_cap_holds_across_processes(
    aredis_client: aredis.Redis, other_process: aredis.Redis
) -> None:
    """With requests_per_minute=2, the third call within the minute is refused, whoever makes it, with a
    Retry-After of up to a minute."""
    settings = provider(requests_per_minute=2)
    first, second = ProviderCaps(aredis_client, settings, 5.0), ProviderCaps(other_process, settings, 5.0)
    async with first.slot("job-1"):
        pass
    async with second.slot("job-2"):
        pass
    with pytest.raises(UpstreamUnavailable) as caught:
        async with first.slot("job-3"):
            pass
    assert 1 <= int(caught.value.headers["Retry-After"]) <= 60


async def test_slots_of_a_dead_worker_expire_and_live_ones_are_renewed(
    aredis_client: aredis.Redis, other_process: aredis.Redis
) -> None:
    """A slot whose lease is not renewed (its worker died) frees itself; a renewed one stays held."""
    settings = provider(max_concurrency=1)
    living = ProviderCaps(aredis_client, settings, lease=1.0)
    async with living.slot("job-1"):
        for _ in range(8):  # renewed well within each lease, for longer than one lease
            await asyncio.sleep(0.15)
            await living.renew()
        with pytest.raises(UpstreamUnavailable):
            async with ProviderCaps(other_process, settings, 5.0).slot("job-2"):
                pass
    dead = ProviderCaps(aredis_client, settings, lease=0.2)
    holder = dead.slot("job-3")
    await holder.__aenter__()  # taken and never released nor renewed: its worker was killed
    await asyncio.sleep(0.4)  # past its lease: the passing time is what is tested
    async with ProviderCaps(other_process, settings, 5.0).slot("job-4"):
        pass


async def test_no_caps_means_no_redis_work(aredis_client: aredis.Redis) -> None:
    """A provider without provider-wide caps admits at once and writes nothing."""
    async with ProviderCaps(aredis_client, ProviderSettings(name="free"), 5.0).slot("job-1"):
        pass
    assert await aredis_client.keys("aior:provider:*") == []
