"""The first-token timeout fires on its own, even when the idle timeout is much longer: the adapter's
deadline is an absolute loop time (``asyncio.timeout_at``) that starts at the first-token deadline."""

from __future__ import annotations

import asyncio

import pytest

from bench.upstream import start_upstream
from shared.errors import UpstreamTimeout
from shared.settings import ProviderSettings, Timeouts
from tests.workers.factories import completion_job
from workers.providers.openai_compatible import OpenAICompatibleProvider


async def test_first_token_timeout_fires_before_the_idle_timeout() -> None:
    """A hung upstream, first_token=0.3 s and idle=60 s: a first-token timeout within seconds."""
    upstream = await start_upstream()
    timeouts = Timeouts(connect=2.0, first_token=0.3, idle=60.0, total=120.0)
    provider = OpenAICompatibleProvider(
        ProviderSettings(name="upstream", kind="openai", base_url=upstream.base_url, timeouts=timeouts)
    )
    job = completion_job(provider="upstream", upstream_model="sim?hang")
    try:
        with pytest.raises(UpstreamTimeout) as caught:
            async with asyncio.timeout(10):
                async for _ in provider.stream(job):
                    pass
        assert "first-token" in caught.value.message
    finally:
        await provider.aclose()
        await upstream.close()
