"""Executes one :class:`CompletionJob`: adapter deltas in, ``S``/``C``/``D``/``E`` frames out.

:func:`complete` is what the AIOrouter worker runs on its event loop.  :func:`run_completion` is the rq
job function named by :data:`shared.jobs.JOB_FUNC`, so that a stock ``rq worker`` can execute a job too
(one event loop per job there; rq does the bookkeeping).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from shared import events, pool_stats
from shared.errors import AIORouterError, IngressGone, UpstreamError, UpstreamUnavailable
from shared.jobs import CompletionJob
from shared.redis_client import plain_async_client
from shared.redis_commands import Command
from shared.serialization import dumps
from shared.settings import load_settings
from workers import batch_results, settlement
from workers.chunks import ChunkWriter, MessageAssembler
from workers.providers import make_adapter
from workers.providers.base import ProviderAdapter, Usage, count_prompt_tokens
from workers.publisher import FramePublisher

log = logging.getLogger(__name__)

MAX_JSON_ANSWER_BYTES = 16 * 1024 * 1024
"""A JSON (non-stream) answer at most: it is published as one message, which the ingress' pub/sub
connection must hold at once (Redis cuts a subscriber whose pending messages pass its
``client-output-buffer-limit pubsub``, 32 MB by default, and with it every request of that ingress)."""

START_HOLD = 0.005
"""Seconds a job's ``S`` frame waits for its first content (or its final frame) to go out with: an upstream
that answers at once costs one round trip through Redis, not two, and a stream's first content does not
wait behind the start's reply.  Short, so that a slow upstream's start is still reported at once."""


@dataclass(frozen=True, slots=True)
class JobEnding:
    """How a job ended: the final frame to publish and what rq records as the job's result."""

    kind: bytes
    meta: dict[str, Any]
    payload: bytes = b""
    error: AIORouterError | None = None
    # Milliseconds: ``ttfb_ms`` to the upstream's first delta (absent without one), ``upstream_ms`` the
    # upstream call to its end; a D frame's meta carries them as ``timing``.
    timing: dict[str, float] = field(default_factory=dict)
    started_ns: int = 0  # the job's start, epoch nanoseconds (for traces)

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error.to_event()}
        return {"finish_reason": self.meta.get("finish_reason"), "usage": self.meta.get("usage")}

    @classmethod
    def failed(cls, error: AIORouterError, *, retryable: bool = False) -> JobEnding:
        """``retryable``: nothing reached the client and another deployment may serve the request."""
        return cls(events.ERROR, {**error.to_event(), "retryable": retryable}, error=error)


@dataclass(slots=True)
class Progress:
    """What a job has taken from its upstream so far, so that a job stopped midway records it."""

    started: float = 0.0  # loop time the job started
    parts: int = 0  # deltas that carried a piece of the message: completion tokens, roughly
    usage: Usage | None = None  # the upstream's own count, once it sent one
    first_part_at: float | None = None  # loop time of the first piece of the message
    streamed: bool = True  # the upstream call streams: its first piece came with its first token

    def ttft(self) -> float | None:
        """Seconds from the job's start to the first piece of its message; None before one came, or when
        the call was answered whole (that piece came with the whole answer)."""
        if self.first_part_at is None or not self.streamed:
            return None
        return self.first_part_at - self.started

    first_at: float = 0.0  # time.perf_counter() of the upstream's first delta

    def usage_so_far(self, job: CompletionJob) -> dict[str, Any] | None:
        """The usage of a job stopped midway: None when nothing was produced."""
        if self.usage is not None:
            return self.usage.to_dict()
        if self.parts == 0:
            return None
        return Usage(count_prompt_tokens(job.body), self.parts).to_dict()


async def complete(
    job: CompletionJob,
    adapter: ProviderAdapter,
    publisher: FramePublisher,
    *,
    worker_name: str,
    taken_at: float | None = None,
    bookkeeping_commands: Callable[[JobEnding], Sequence[Command]] = lambda ending: (),
    guard_commands: Callable[[CompletionJob], Sequence[Command]] = lambda job: (),
    progress: Progress | None = None,
) -> JobEnding:
    """Run ``job`` to its final frame, published in one round trip with the request's billing (charge,
    token refund, usage record; :func:`workers.settlement.billing_commands`), a batch line's result and
    the guard's writes held back for a job that ended well (``guard_commands(job)``: in-flight count,
    breaker, time to first token; :meth:`GuardedProvider.guard_commands`): whoever sees the answer sees
    it charged and its deployment's breaker told.  What nobody waiting for the answer needs follows it,
    built and written once the frame landed (:meth:`FramePublisher.finish` with ``after``): rq's
    bookkeeping of the job (``bookkeeping_commands(ending)``: registries, status, result) and the job's
    count in its pool's minute (:mod:`shared.pool_stats`).

    ``progress`` (a fresh :class:`Progress`) is where the job keeps what its upstream produced: the caller
    that gave it reads it when it stops the job midway (:meth:`workers.worker.AsyncWorker._record_stop`)."""
    start_meta: dict[str, Any] = {
        "provider": job.provider,
        "worker": worker_name,
        "upstream_model": job.upstream_model,
    }
    if taken_at is not None:  # the worker's pick-up: job taken off its queue to this frame
        start_meta["prep_ms"] = round((time.perf_counter() - taken_at) * 1000, 2)
    publisher.start(start_meta, hold=START_HOLD)
    progress = progress if progress is not None else Progress()
    progress.started, progress.streamed = asyncio.get_running_loop().time(), adapter.streams(job)
    began, began_ns = time.perf_counter(), time.time_ns()
    try:
        ending = await (
            _stream(job, adapter, publisher, progress)
            if job.stream
            else _collect(job, adapter, publisher, progress)
        )
    except IngressGone as exc:  # nobody will read it: stop, recording what the upstream produced so far
        log.info("job %s: its ingress is gone; stopped after %d part(s)", job.request_id, progress.parts)
        ending = JobEnding(events.ERROR, {**exc.to_event(), "usage": progress.usage_so_far(job)}, error=exc)
    except AIORouterError as exc:
        retryable = isinstance(exc, UpstreamUnavailable) and not publisher.content_queued
        ending = JobEnding.failed(exc, retryable=retryable)
    except Exception:  # a bug in an adapter must still end the request with an error frame
        log.exception("job %s: unexpected error", job.request_id)
        ending = JobEnding.failed(UpstreamError("The worker failed while calling the upstream provider."))
    ending.timing["upstream_ms"] = round((time.perf_counter() - began) * 1000, 1)
    if progress.first_at:
        ending.timing["ttfb_ms"] = round((progress.first_at - began) * 1000, 1)
    ending = replace(ending, started_ns=began_ns)
    if ending.kind == events.DONE:
        ending.meta["timing"] = ending.timing
    # Shielded: the final frame, then rq's bookkeeping built once it landed, go out even if the job is
    # cancelled meanwhile (the worker then leaves them to this).
    billing, retry_commands = settlement.final_commands(
        job, error=ending.error, token_usage=ending.meta.get("usage")
    )
    # A batch line's result goes first: whoever sees the job ended also sees its result.  It is recorded
    # once whatever the tries (batch_result.lua), so it is in the retry too: a line charged without its
    # result would run, and be charged, again.
    result = batch_results.result_commands(job, error=ending.error, payload=ending.payload, meta=ending.meta)
    # The guard's writes go with the frame: a probe's success closes its breaker before a next request.
    commands = [*result, *guard_commands(job), *billing]

    def after() -> list[Command]:
        return [*bookkeeping_commands(ending), *_pool_minute_commands(job, ending, progress)]

    finish = publisher.finish(
        ending.kind, ending.meta, ending.payload, commands, [*result, *retry_commands], after
    )
    await asyncio.shield(finish)
    return ending


def _pool_minute_commands(job: CompletionJob, ending: JobEnding, progress: Progress) -> list[Command]:
    field = pool_stats.outcome_field(
        failed=ending.error is not None,
        gone=isinstance(ending.error, IngressGone),
        ttft_seconds=progress.ttft(),
    )
    return pool_stats.record_commands(job.provider, field, now=time.time())


async def _stream(
    job: CompletionJob, adapter: ProviderAdapter, publisher: FramePublisher, progress: Progress
) -> JobEnding:
    writer = ChunkWriter(job)
    loop = asyncio.get_running_loop()
    async for delta in adapter.stream(job):
        if not progress.first_at:
            progress.first_at = time.perf_counter()
        if delta.usage is not None:
            progress.usage = delta.usage
            writer.note_usage(delta)
        part = delta.has_message_part
        if part and progress.first_part_at is None:
            progress.first_part_at = loop.time()
        progress.parts += part
        sse = writer.sse(delta)
        if sse is not None:
            first = not publisher.content_queued
            publisher.send_chunks(sse)
            if first:  # the first content leaves before the rest of a burst is parsed
                await publisher.let_out()
    if not writer.finished:
        raise UpstreamError("The upstream stream ended without a finish reason.")
    usage = progress.usage or Usage(count_prompt_tokens(job.body), progress.parts)
    tail = (
        events.sse_data(writer.usage_chunk(usage)) + events.SSE_DONE if job.include_usage else events.SSE_DONE
    )
    return JobEnding(events.DONE, {"usage": usage.to_dict(), "finish_reason": writer.finish_reason}, tail)


async def _collect(
    job: CompletionJob, adapter: ProviderAdapter, publisher: FramePublisher, progress: Progress
) -> JobEnding:
    assembler = MessageAssembler(job)
    loop = asyncio.get_running_loop()
    async for delta in adapter.stream(job):
        if not progress.first_at:
            progress.first_at = time.perf_counter()
        publisher.check()  # a non-stream job publishes nothing until its answer: nobody listening stops it
        if delta.usage is not None:
            progress.usage = delta.usage
        part = delta.has_message_part
        if part and progress.first_part_at is None:
            progress.first_part_at = loop.time()
        progress.parts += part
        assembler.add(delta)
    if not assembler.finished:
        raise UpstreamError("The upstream stream ended without a finish reason.")
    # Without the upstream's count: a streamed call's parts (one per token, roughly), or the words of an
    # answer that came whole (the prompt's estimate, count_prompt_tokens, counts words too).
    usage = progress.usage or Usage(count_prompt_tokens(job.body), max(progress.parts, assembler.words()))
    payload = dumps(assembler.body(usage))
    if len(payload) > MAX_JSON_ANSWER_BYTES:  # one frame, one pub/sub message: kept under Redis' bounds
        raise UpstreamError(f"The upstream's answer is longer than {MAX_JSON_ANSWER_BYTES} bytes.")
    return JobEnding(
        events.DONE, {"usage": usage.to_dict(), "finish_reason": assembler.finish_reason}, payload
    )


def run_completion(wire: dict[str, Any]) -> dict[str, Any]:
    """The rq job function: run one completion on a fresh event loop (for a stock ``rq worker``)."""
    return asyncio.run(_run_standalone(CompletionJob.from_wire(wire)))


async def _run_standalone(job: CompletionJob) -> dict[str, Any]:
    settings = load_settings()
    redis = plain_async_client(settings.redis_url)
    adapter = make_adapter(settings.provider(job.provider))
    try:
        publisher = FramePublisher(redis, job.reply_to, job.request_id)
        ending = await complete(job, adapter, publisher, worker_name="rq")
    finally:
        await adapter.aclose()
        await redis.aclose()
    if ending.error is not None:
        raise ending.error
    return ending.summary()
