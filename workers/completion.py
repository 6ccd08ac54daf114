"""Executes one :class:`CompletionJob`: adapter deltas in, ``S``/``C``/``D``/``E`` frames out.

:func:`complete` is what the AIOrouter worker runs on its event loop.  :func:`run_completion` is the rq
job function named by :data:`shared.jobs.JOB_FUNC`, so that a stock ``rq worker`` can execute a job too
(one event loop per job there; rq does the bookkeeping).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aredis

from shared import events
from shared.errors import AIORouterError, UpstreamError, UpstreamUnavailable
from shared.jobs import CompletionJob
from shared.rq_bridge import Command
from shared.serialization import dumps
from shared.settings import load_settings
from workers import batch_results, settlement
from workers.chunks import ChunkWriter, MessageAssembler
from workers.providers import make_adapter
from workers.providers.base import ProviderAdapter, Usage, count_prompt_tokens
from workers.publisher import FramePublisher

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a job ended: the final frame to publish and what rq records as the job's result."""

    kind: bytes
    meta: dict[str, Any]
    payload: bytes = b""
    error: AIORouterError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error.to_event()}
        return {"finish_reason": self.meta.get("finish_reason"), "usage": self.meta.get("usage")}

    @classmethod
    def failed(cls, error: AIORouterError, *, retryable: bool = False) -> Outcome:
        """``retryable``: nothing reached the client and another deployment may serve the request."""
        return cls(events.ERROR, {**error.to_event(), "retryable": retryable}, error=error)


async def complete(
    job: CompletionJob,
    adapter: ProviderAdapter,
    publisher: FramePublisher,
    *,
    worker_name: str,
    final_commands: Callable[[Outcome], Sequence[Command]] = lambda outcome: (),
    closing_commands: Callable[[CompletionJob], Sequence[Command]] = lambda job: (),
) -> Outcome:
    """Run ``job`` to its final frame, published together with ``final_commands(outcome)``, the
    adapter's ``closing_commands(job)`` (:meth:`GuardedProvider.closing_commands`) and the request's
    charge and usage record (:mod:`workers.settlement`)."""
    publisher.start({"provider": job.provider, "worker": worker_name, "upstream_model": job.upstream_model})
    try:
        outcome = await (_stream(job, adapter, publisher) if job.stream else _collect(job, adapter))
    except AIORouterError as exc:
        retryable = isinstance(exc, UpstreamUnavailable) and not publisher.content_queued
        outcome = Outcome.failed(exc, retryable=retryable)
    except Exception:  # a bug in an adapter must still end the request with an error frame
        log.exception("job %s: unexpected error", job.request_id)
        outcome = Outcome.failed(UpstreamError("The worker failed while calling the upstream provider."))
    # Shielded: once rq's final bookkeeping is built it must land together with its frame.
    commands = [
        # A batch line's result goes first: whoever sees the job ended also sees its result.
        *batch_results.result_commands(job, error=outcome.error, payload=outcome.payload, meta=outcome.meta),
        *final_commands(outcome),
        *closing_commands(job),
        *settlement.closing_commands(job, error=outcome.error, token_usage=outcome.meta.get("usage")),
    ]
    await asyncio.shield(publisher.finish(outcome.kind, outcome.meta, outcome.payload, commands))
    return outcome


async def _stream(job: CompletionJob, adapter: ProviderAdapter, publisher: FramePublisher) -> Outcome:
    writer = ChunkWriter(job)
    usage: Usage | None = None
    parts = 0
    async for delta in adapter.stream(job):
        usage = delta.usage or usage
        parts += delta.has_message_part
        sse = writer.sse(delta)
        if sse is not None:
            publisher.send_chunks(sse)
    if writer.finish_reason is None:
        raise UpstreamError("The upstream stream ended without a finish reason.")
    usage = usage or Usage(count_prompt_tokens(job.body), parts)
    tail = (
        events.sse_data(writer.usage_chunk(usage)) + events.SSE_DONE if job.include_usage else events.SSE_DONE
    )
    return Outcome(events.DONE, {"usage": usage.to_dict(), "finish_reason": writer.finish_reason}, tail)


async def _collect(job: CompletionJob, adapter: ProviderAdapter) -> Outcome:
    assembler = MessageAssembler(job)
    usage: Usage | None = None
    parts = 0
    async for delta in adapter.stream(job):
        usage = delta.usage or usage
        parts += delta.has_message_part
        assembler.add(delta)
    if assembler.finish_reason is None:
        raise UpstreamError("The upstream stream ended without a finish reason.")
    usage = usage or Usage(count_prompt_tokens(job.body), parts)
    body = assembler.body(usage)
    return Outcome(
        events.DONE, {"usage": usage.to_dict(), "finish_reason": assembler.finish_reason}, dumps(body)
    )


def run_completion(wire: dict[str, Any]) -> dict[str, Any]:
    """The rq job function: run one completion on a fresh event loop (for a stock ``rq worker``)."""
    return asyncio.run(_run_standalone(CompletionJob.from_wire(wire)))


async def _run_standalone(job: CompletionJob) -> dict[str, Any]:
    settings = load_settings()
    redis = aredis.Redis.from_url(settings.redis_url)
    adapter = make_adapter(settings.provider(job.provider))
    try:
        publisher = FramePublisher(redis, job.reply_to, job.request_id)
        outcome = await complete(job, adapter, publisher, worker_name="rq")
    finally:
        await adapter.aclose()
        await redis.aclose()
    if outcome.error is not None:
        raise outcome.error
    return outcome.summary()
