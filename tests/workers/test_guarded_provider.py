"""The worker's guard around a provider adapter, on the real Redis: same-deployment retries before
content (honouring a short Retry-After), the deployment's breaker (refusal, outcome, probe), in-flight
counts and time to first token for routing, and the retryable flag of the E frame."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aredis

from shared import events, keys
from shared.breaker import CircuitBreaker
from shared.errors import AIORouterError, UpstreamBadRequest, UpstreamError, UpstreamUnavailable
from shared.jobs import CompletionJob
from shared.lua import LuaScript, ScriptCall
from shared.redis_commands import replay
from shared.routing_state import InflightTracker, load_stats
from shared.settings import BreakerSettings, Deployment, ProviderSettings, RoutingStatsSettings
from tests.waiting import eventually
from tests.workers.factories import completion_job
from workers import guarded_provider
from workers.completion import complete
from workers.guarded_provider import GuardedProvider
from workers.provider_caps import ProviderCaps
from workers.providers.base import Delta, Usage
from workers.publisher import FramePublisher

DEPLOYMENT = "p/m"
Script = Sequence[AIORouterError | None]  # per attempt: the error it raises (after `content_first`), or None


class ScriptedAdapter:
    """An adapter whose attempts follow a script: each fails with its error or answers two words."""

    def __init__(self, script: Script, *, content_first: bool = False, empty_first: bool = False) -> None:
        self.script = list(script)
        self.content_first = content_first
        self.empty_first = empty_first  # a delta with nothing in it (e.g. OpenAI's role-only chunk)
        self.attempts = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.streaming = True  # False: every call answers whole, as a JSON call does

    def streams(self, job: CompletionJob) -> bool:
        return self.streaming or job.stream

    async def stream(self, job: CompletionJob) -> AsyncIterator[Delta]:
        outcome = self.script[min(self.attempts, len(self.script) - 1)]
        self.attempts += 1
        await self.gate.wait()
        if self.empty_first:
            yield Delta(system_fingerprint="fp")
        if outcome is not None:
            if self.content_first:
                yield Delta(content="partial ")
            raise outcome
        yield Delta(content="hello ")
        yield Delta(content="world")
        yield Delta(finish_reason="stop")
        yield Delta(usage=Usage(2, 2))

    async def aclose(self) -> None:
        pass


def guard(
    redis: aredis.Redis,
    adapter: ScriptedAdapter,
    breaker: CircuitBreaker | None = None,
    *,
    defer: bool = False,
    **provider: Any,
) -> GuardedProvider:
    settings = ProviderSettings(name="p", retry_backoff=0.01, **provider)
    return GuardedProvider(
        adapter,
        redis=redis,
        provider=settings,
        breaker=breaker or CircuitBreaker(redis, BreakerSettings(failure_threshold=2)),
        caps=ProviderCaps(redis, settings, lease=5.0),
        inflight=InflightTracker(redis, "worker-1", lease=5.0),
        stats=RoutingStatsSettings(),
        defer_success_writes=defer,
    )


def job() -> CompletionJob:
    return completion_job(provider="p", upstream_model="m")


async def drain(provider: GuardedProvider) -> str:
    return "".join([d.content or "" async for d in provider.stream(job())])


async def test_retryable_failure_is_retried_on_the_same_deployment(aredis_client: aredis.Redis) -> None:
    """A 503 before content is retried once here; the retry's answer is the job's, the breaker stays clean."""
    adapter = ScriptedAdapter([UpstreamUnavailable("busy"), None])
    assert await drain(guard(aredis_client, adapter, retries=1)) == "hello world"
    assert adapter.attempts == 2
    view = (await CircuitBreaker(aredis_client, BreakerSettings()).views([DEPLOYMENT]))[0]
    assert view.failures == 0 and view.status == "closed"


async def test_retries_are_bounded_and_the_failure_counts_once(aredis_client: aredis.Redis) -> None:
    """With retries=2 a provider failing every time is called three times, then fails the job; the
    breaker records one failure for the job."""
    adapter = ScriptedAdapter([UpstreamUnavailable("down")])
    with pytest.raises(UpstreamUnavailable):
        await drain(guard(aredis_client, adapter, retries=2))
    assert adapter.attempts == 3
    view = (await CircuitBreaker(aredis_client, BreakerSettings()).views([DEPLOYMENT]))[0]
    assert view.failures == 1


async def test_short_retry_after_is_honoured_and_long_one_falls_back(aredis_client: aredis.Redis) -> None:
    """An upstream Retry-After within max_retry_after is waited for and retried; a longer one is not."""
    short = ScriptedAdapter([UpstreamUnavailable("429", headers={"Retry-After": "0.05"}), None])
    assert await drain(guard(aredis_client, short, retries=1, max_retry_after=1.0)) == "hello world"
    assert short.attempts == 2
    long = ScriptedAdapter([UpstreamUnavailable("429", headers={"Retry-After": "30"}), None])
    with pytest.raises(UpstreamUnavailable):
        await drain(guard(aredis_client, long, retries=1, max_retry_after=1.0))
    assert long.attempts == 1


@pytest.mark.parametrize(
    "error", [UpstreamBadRequest("context too long"), UpstreamError("credentials rejected")]
)
async def test_non_retryable_errors_are_not_retried(
    aredis_client: aredis.Redis, error: AIORouterError
) -> None:
    """A 400 or a configuration error fails the job on the first attempt."""
    adapter = ScriptedAdapter([error, None])
    with pytest.raises(type(error)):
        await drain(guard(aredis_client, adapter, retries=3))
    assert adapter.attempts == 1


async def test_failure_after_content_is_not_retried(aredis_client: aredis.Redis) -> None:
    """Once a delta went out, a cut is the job's failure: no second attempt could be spliced in."""
    adapter = ScriptedAdapter([UpstreamUnavailable("cut"), None], content_first=True)
    with pytest.raises(UpstreamUnavailable):
        await drain(guard(aredis_client, adapter, retries=3))
    assert adapter.attempts == 1


async def test_failure_after_an_empty_delta_is_still_retried(aredis_client: aredis.Redis) -> None:
    """A cut after a delta without content (a role-only chunk) is still retried on the same deployment."""
    adapter = ScriptedAdapter([UpstreamUnavailable("cut"), None], empty_first=True)
    assert await drain(guard(aredis_client, adapter, retries=1)) == "hello world"
    assert adapter.attempts == 2


async def test_open_breaker_refuses_without_calling_upstream(aredis_client: aredis.Redis) -> None:
    """After failure_threshold failed jobs the breaker is open: the next job fails with circuit_open and a
    Retry-After, and the upstream is not called."""
    breaker = CircuitBreaker(aredis_client, BreakerSettings(failure_threshold=2, cooldown=30))
    adapter = ScriptedAdapter([UpstreamUnavailable("down")])
    for _ in range(2):
        with pytest.raises(UpstreamUnavailable):
            await drain(guard(aredis_client, adapter, breaker, retries=0))
    with pytest.raises(UpstreamUnavailable) as caught:
        await drain(guard(aredis_client, adapter, breaker, retries=0))
    assert caught.value.code == "circuit_open"
    assert 1 <= int(caught.value.headers["Retry-After"]) <= 30
    assert adapter.attempts == 2


async def test_successful_probe_closes_the_breaker(aredis_client: aredis.Redis) -> None:
    """After the cooldown one job is the probe; its success closes the breaker."""
    breaker = CircuitBreaker(aredis_client, BreakerSettings(failure_threshold=1, cooldown=0.2))
    with pytest.raises(UpstreamUnavailable):
        await drain(guard(aredis_client, ScriptedAdapter([UpstreamUnavailable("down")]), breaker, retries=0))
    assert (await breaker.views([DEPLOYMENT]))[0].status == "open"
    await asyncio.sleep(0.3)  # past the cooldown: the passing time is what is tested
    assert await drain(guard(aredis_client, ScriptedAdapter([None]), breaker)) == "hello world"
    assert (await breaker.views([DEPLOYMENT]))[0].status == "closed"


async def test_inflight_count_and_time_to_first_token_are_recorded(aredis_client: aredis.Redis) -> None:
    """While a job runs its deployment counts one in-flight job; afterwards none, and a TTFT sample."""
    adapter = ScriptedAdapter([None])
    adapter.gate.clear()
    provider = guard(aredis_client, adapter)
    task = asyncio.create_task(drain(provider))
    await eventually(lambda: inflight_is(aredis_client, 1))
    adapter.gate.set()
    assert await task == "hello world"
    stats = (await load_stats(aredis_client, [Deployment("p", "m")]))[DEPLOYMENT]
    assert stats.inflight == 0 and stats.ttft is not None


async def test_a_call_answered_whole_gives_no_time_to_first_token(aredis_client: aredis.Redis) -> None:
    """With upstream_stream = "as_requested" a non-stream job's call is one JSON answer: its first content
    comes at the end, which is no time to first token, so its deployment gets no sample; a stream job's
    call still gives one."""
    adapter = ScriptedAdapter([None])
    adapter.streaming = False  # what the OpenAI adapter says of a non-stream job with "as_requested"
    provider = guard(aredis_client, adapter)
    whole = completion_job(provider="p", upstream_model="m", stream=False)
    assert "".join([d.content or "" async for d in provider.stream(whole)]) == "hello world"
    assert (await load_stats(aredis_client, [Deployment("p", "m")]))[DEPLOYMENT].ttft is None
    assert await drain(provider) == "hello world"  # job() streams
    assert (await load_stats(aredis_client, [Deployment("p", "m")]))[DEPLOYMENT].ttft is not None


async def inflight_is(redis: aredis.Redis, count: int) -> bool:
    """Whether routing's statistics count ``count`` jobs in flight on the test deployment."""
    return (await load_stats(redis, [Deployment("p", "m")]))[DEPLOYMENT].inflight == count


async def test_time_to_first_token_is_written_when_the_job_ends(aredis_client: aredis.Redis) -> None:
    """No Redis write holds up the stream after its first content: the TTFT sample appears with the
    job's last round trip, and measures the time to that first content."""
    provider = guard(aredis_client, ScriptedAdapter([None]))
    loop = asyncio.get_running_loop()
    started = loop.time()
    deltas = provider.stream(completion_job(provider="p", upstream_model="m"))
    first = await anext(deltas)
    assert first.content == "hello "
    await asyncio.sleep(0.05)  # a pause in which a write made at the first content would land
    deployment = Deployment("p", "m")
    assert (await load_stats(aredis_client, [deployment]))[DEPLOYMENT].ttft is None
    async for _ in deltas:
        pass
    whole = loop.time() - started
    ttft = (await load_stats(aredis_client, [deployment]))[DEPLOYMENT].ttft
    assert ttft is not None and ttft < whole - 0.04  # the pause after the first content is not in it


async def test_a_success_s_writes_wait_for_the_final_round_trip(aredis_client: aredis.Redis) -> None:
    """With defer_success_writes a job that ended well leaves in-flight -1, the breaker's success and
    its TTFT to guard_commands(), once: nothing is written until they are run."""
    provider = guard(aredis_client, ScriptedAdapter([None]), defer=True)
    the_job = completion_job(provider="p", upstream_model="m")
    assert "".join([d.content or "" async for d in provider.stream(the_job)]) == "hello world"
    deployment = Deployment("p", "m")
    stats = (await load_stats(aredis_client, [deployment]))[DEPLOYMENT]
    assert stats.inflight == 1 and stats.ttft is None
    commands = provider.guard_commands(the_job)
    assert provider.guard_commands(the_job) == []
    async with aredis_client.pipeline(transaction=False) as pipe:
        replay(pipe, commands)
        await pipe.execute()
    stats = (await load_stats(aredis_client, [deployment]))[DEPLOYMENT]
    assert stats.inflight == 0 and stats.ttft is not None


async def test_a_failure_s_writes_are_not_deferred(aredis_client: aredis.Redis) -> None:
    """A job that failed records its breaker sample at once, deferral or not: nothing is left over."""
    breaker = CircuitBreaker(aredis_client, BreakerSettings(failure_threshold=1))
    provider = guard(
        aredis_client, ScriptedAdapter([UpstreamUnavailable("down")]), breaker, defer=True, retries=0
    )
    the_job = completion_job(provider="p", upstream_model="m")
    with pytest.raises(UpstreamUnavailable):
        async for _ in provider.stream(the_job):
            pass
    assert (await breaker.views([DEPLOYMENT]))[0].status == "open"
    assert (await load_stats(aredis_client, [Deployment("p", "m")]))[DEPLOYMENT].inflight == 0
    assert provider.guard_commands(the_job) == []


async def run_complete(adapter: ScriptedAdapter, stream: bool) -> events.Frame:
    """The final frame `complete` publishes for one job through a guard on fakeredis."""
    redis = fakeredis.FakeAsyncRedis()
    the_job = completion_job(provider="p", upstream_model="m", stream=stream)
    pubsub = redis.pubsub()
    await pubsub.subscribe(the_job.reply_to)
    try:
        publisher = FramePublisher(redis, the_job.reply_to, the_job.request_id)
        await complete(the_job, guard(redis, adapter, retries=0), publisher, worker_name="w")
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
            if message is not None and (frame := events.decode(message["data"])).is_final:
                return frame
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()


@pytest.mark.parametrize("stream", [True, False])
async def test_failure_before_content_is_marked_retryable(stream: bool) -> None:
    """An unavailable upstream before any content ends with an E frame the ingress may fall back on."""
    frame = await run_complete(ScriptedAdapter([UpstreamUnavailable("down")]), stream)
    assert frame.kind == events.ERROR and frame.meta["retryable"] is True


async def test_failure_after_streamed_content_is_not_retryable() -> None:
    """A stream that sent content and then failed ends with a non-retryable E frame."""
    frame = await run_complete(ScriptedAdapter([UpstreamUnavailable("cut")], content_first=True), True)
    assert frame.kind == events.ERROR and frame.meta["retryable"] is False


async def test_bad_request_is_not_retryable() -> None:
    """An upstream 400 ends with a non-retryable E frame carrying status 400."""
    frame = await run_complete(ScriptedAdapter([UpstreamBadRequest("too long")]), False)
    assert frame.meta["retryable"] is False and frame.meta["status"] == 400


class CountingBreaker(CircuitBreaker):
    """A breaker that counts the allow round trips the guard asks of it."""

    allows = 0

    def allow_call(self, deployment_id: str) -> ScriptCall:
        self.allows += 1
        return super().allow_call(deployment_id)


async def broken_now(redis: aredis.Redis) -> list[Any]:
    """What a worker's start round trip reads: the deployments whose breaker is not closed."""
    return list(await redis.zrange(keys.BREAKER_BLOCKED, 0, -1))


async def test_a_fresh_view_without_the_deployment_skips_the_breaker_round_trip(
    aredis_client: aredis.Redis,
) -> None:
    """A closed deployment (absent from the view the job's start round trip read) is called at once: no
    allow script, yet the job counts as in flight while it runs and not afterwards."""
    breaker = CountingBreaker(aredis_client, BreakerSettings())
    adapter = ScriptedAdapter([None])
    adapter.gate.clear()
    provider = guard(aredis_client, adapter, breaker)
    provider.note_broken(await broken_now(aredis_client))
    task = asyncio.create_task(drain(provider))
    await eventually(lambda: inflight_is(aredis_client, 1))
    adapter.gate.set()
    assert await task == "hello world"
    assert breaker.allows == 0
    assert await inflight_is(aredis_client, 0)


async def test_a_job_that_ends_before_its_count_is_due_writes_neither_plus_nor_minus_one(
    aredis_client: aredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a closed deployment a job counts as in flight only from ``COUNT_AFTER`` on: one that ends
    sooner leaves no -1 to write (its final round trip carries the breaker's success and its TTFT only),
    and neither the heartbeat's renewal while it runs nor anything after it ever counts it in Redis."""
    monkeypatch.setattr(guarded_provider, "COUNT_AFTER", 60.0)
    adapter = ScriptedAdapter([None])
    adapter.gate.clear()
    provider = guard(aredis_client, adapter, defer=True)
    provider.note_broken(await broken_now(aredis_client))
    the_job = job()
    task = asyncio.create_task(drain_job(provider, the_job))
    await wait_for_attempt(adapter)
    await provider.renew()  # a heartbeat while the job runs, before it is counted
    assert await inflight_is(aredis_client, 0)
    adapter.gate.set()
    assert await task == "hello world"
    scripts = [args[1] for args, _ in provider.guard_commands(the_job)]
    assert len(scripts) == 2 and LuaScript.load("routing_inflight").source not in scripts
    await provider.renew()
    assert not await aredis_client.exists(keys.inflight_counts(DEPLOYMENT))


async def test_a_failed_job_that_ends_before_its_count_is_due_is_never_counted(
    aredis_client: aredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for a job that fails at once (its breaker sample is written at the end, without a -1):
    nothing counts it, then or after a renewal."""
    monkeypatch.setattr(guarded_provider, "COUNT_AFTER", 60.0)
    provider = guard(aredis_client, ScriptedAdapter([UpstreamBadRequest("no")]), retries=0)
    provider.note_broken(await broken_now(aredis_client))
    with pytest.raises(UpstreamBadRequest):
        await drain(provider)
    await provider.renew()
    assert not await aredis_client.exists(keys.inflight_counts(DEPLOYMENT))


async def test_a_job_past_its_count_delay_is_counted_once_and_taken_back(
    aredis_client: aredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job still running after ``COUNT_AFTER`` counts one in flight, also through a renewal, and none
    once it ended."""
    monkeypatch.setattr(guarded_provider, "COUNT_AFTER", 0.01)
    adapter = ScriptedAdapter([None])
    adapter.gate.clear()
    provider = guard(aredis_client, adapter)
    provider.note_broken(await broken_now(aredis_client))
    task = asyncio.create_task(drain(provider))
    await eventually(lambda: inflight_is(aredis_client, 1))
    await provider.renew()
    assert await inflight_is(aredis_client, 1)
    adapter.gate.set()
    assert await task == "hello world"
    assert await inflight_is(aredis_client, 0)
    await provider.renew()
    assert await inflight_is(aredis_client, 0)


async def drain_job(provider: GuardedProvider, the_job: CompletionJob) -> str:
    return "".join([d.content or "" async for d in provider.stream(the_job)])


async def wait_for_attempt(adapter: ScriptedAdapter) -> None:
    """Until the guard has called the adapter (the job is past its breaker decision and counting)."""
    await eventually(lambda: adapter.attempts > 0)


async def test_a_view_naming_the_deployment_asks_the_breaker(aredis_client: aredis.Redis) -> None:
    """An open breaker is in the view: the job takes the allow round trip and is refused with
    circuit_open before any upstream call."""
    breaker = CountingBreaker(aredis_client, BreakerSettings(failure_threshold=1, cooldown=30))
    tripping = ScriptedAdapter([UpstreamUnavailable("down")])
    with pytest.raises(UpstreamUnavailable):
        await drain(guard(aredis_client, tripping, breaker, retries=0))
    provider = guard(aredis_client, adapter := ScriptedAdapter([None]), breaker)
    provider.note_broken(await broken_now(aredis_client))
    with pytest.raises(UpstreamUnavailable) as caught:
        await drain(provider)
    assert caught.value.code == "circuit_open" and adapter.attempts == 0
    assert breaker.allows == 2


async def test_a_stale_view_is_not_trusted(
    aredis_client: aredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A view older than BROKEN_VIEW_FRESH stands for nothing: an open breaker it does not name still
    refuses the job."""
    breaker = CircuitBreaker(aredis_client, BreakerSettings(failure_threshold=1, cooldown=30))
    provider = guard(aredis_client, adapter := ScriptedAdapter([None]), breaker)
    provider.note_broken([])  # read before the breaker opened
    with pytest.raises(UpstreamUnavailable):
        await drain(guard(aredis_client, ScriptedAdapter([UpstreamUnavailable("down")]), breaker, retries=0))
    monkeypatch.setattr(guarded_provider, "BROKEN_VIEW_FRESH", -1.0)
    with pytest.raises(UpstreamUnavailable) as caught:
        await drain(provider)
    assert caught.value.code == "circuit_open" and adapter.attempts == 0


async def test_after_a_failure_the_view_is_asked_again(aredis_client: aredis.Redis) -> None:
    """A failure in this process may have tripped the breaker: the next job asks it, even with a view
    that was fresh and empty, and is refused."""
    breaker = CircuitBreaker(aredis_client, BreakerSettings(failure_threshold=1, cooldown=30))
    adapter = ScriptedAdapter([UpstreamUnavailable("down"), None])
    provider = guard(aredis_client, adapter, breaker, retries=0)
    provider.note_broken([])
    with pytest.raises(UpstreamUnavailable):
        await drain(provider)  # trips the breaker
    with pytest.raises(UpstreamUnavailable) as caught:
        await drain(provider)
    assert caught.value.code == "circuit_open" and adapter.attempts == 1
