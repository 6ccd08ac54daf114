"""Serving one completion across the deployments routing chose: fall back until one serves it.

For each deployment of the :class:`~ingress.routing.RoutePlan`, best first:

1. skip it when its pool's queue already holds ``ProviderSettings.queue_limit`` jobs (load shedding): known
   from routing's statistics where the strategy read them, else from the enqueue itself (the queue's
   length after the push: a job that found the queue full is taken back at once);
2. enqueue a fresh job on its pool (a new job id per attempt; the first attempt's job usually went on its
   queue in the admission's round trip already: an :class:`EnqueuedAttempt`) and wait for the start,
   then for the first real content, sending nothing to the client meanwhile (not even a stream's
   headers);
3. content (a ``C`` or ``D`` frame) commits the request to this deployment: the client gets its response
   with its ``X-Provider``, and a later failure ends the stream with an error event, never another
   provider's output;
4. a retryable failure before content (an ``E`` frame with ``retryable``: connect error, timeout, 429,
   5xx, a stream cut before content, breaker open or provider full at the worker), or a queue timeout
   that withdrew the job, moves on to the next deployment; any other error is the answer.

When every deployment was skipped or failed, the last failure is the answer (503 with ``Retry-After``).
``X-Automated-Decision`` names the strategy and how many deployments failed before the one that served.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.types import Receive, Send

from ingress.context import IngressContext
from ingress.relay import CompletionRelay
from ingress.reply_hub import ReplyHub, Subscription
from ingress.request_record import RequestRecord
from ingress.routing import UNAVAILABLE_RETRY_AFTER, RoutePlan, automated_decision, retry_after
from shared import events
from shared.errors import AIORouterError, QueueTimeout, ServiceUnavailable
from shared.jobs import CompletionJob
from shared.routing_state import deployment_id
from shared.settings import Deployment

JobFactory = Callable[[Deployment], CompletionJob]


@dataclass(frozen=True, slots=True)
class EnqueuedAttempt:
    """The first attempt's job, put on its queue by the admission's round trip
    (:meth:`ingress.admission.Admission.admit`), with the subscription registered before it was."""

    deployment: Deployment
    job: CompletionJob
    subscription: Subscription
    queue_depth: int  # the queue's length with the job


def first_deployment(context: IngressContext, plan: RoutePlan) -> Deployment | None:
    """The deployment the first attempt goes to: the plan's first whose queue is not known to be full."""
    return next((d for d in plan.deployments if not _queue_full(context, plan, d, failures=0)), None)


class QueueFull(ServiceUnavailable):
    """Every remaining deployment's pool has more queued jobs than its ``queue_limit``."""

    default_code = "queue_full"
    default_message = "All providers are at capacity; retry shortly."


class FallbackRun:
    """One request's attempts, one deployment after another; ``relay``/``job`` are the last attempt's."""

    def __init__(
        self,
        context: IngressContext,
        plan: RoutePlan,
        make_job: JobFactory,
        record: RequestRecord | None = None,
        *,
        extra_headers: Sequence[tuple[bytes, bytes]] = (),
        enqueued: EnqueuedAttempt | None = None,
    ) -> None:
        self._context = context
        self._plan = plan
        self._make_job = make_job
        self._record = record if record is not None else RequestRecord()
        self._extra_headers = list(extra_headers)
        self._subscription: Subscription | None = None
        self._enqueued = enqueued  # the first attempt, already on its queue
        self.client_left = False
        self.failures = 0  # deployments that failed before content (the fallbacks taken)
        self.relay: CompletionRelay | None = None  # the attempt in progress, or the last one
        self.job: CompletionJob | None = None  # that attempt's job

    def client_gone(self) -> None:
        """The client disconnected: stop the attempt in progress and start no other."""
        self.client_left = True
        if self._subscription is not None:
            self._subscription.client_gone()

    async def run(self, receive: Receive, send: Send) -> None:
        """Serve the request, watching for the client's disconnect meanwhile."""
        watcher = asyncio.create_task(_watch_disconnect(receive, self))
        try:
            await self.serve(send)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def serve(self, send: Send) -> None:
        """Try the plan's deployments in order (see the module docstring); raises the final error."""
        last_error: AIORouterError | None = None
        for deployment in self._plan.deployments:
            if self.client_left:
                return
            if _queue_full(self._context, self._plan, deployment, self.failures):
                last_error = last_error or QueueFull(headers=retry_after(UNAVAILABLE_RETRY_AFTER))
                continue
            ahead, self._enqueued = self._enqueued, None
            if ahead is not None:
                assert ahead.deployment == deployment, "the admission enqueued another deployment's job"
                error = await self._attempt(ahead.job, send, ahead)
            else:
                error = await self._attempt(self._make_job(deployment), send)
            if error is None:
                return
            if isinstance(error, QueueFull):  # shed, not failed: no fallback counted
                last_error = last_error or error
                continue
            last_error = error
            self.failures += 1
            self._record.fallbacks = self.failures
        if last_error is None:
            last_error = ServiceUnavailable(headers=retry_after(UNAVAILABLE_RETRY_AFTER))
        last_error.headers.setdefault("Retry-After", "1")
        raise last_error

    async def _attempt(
        self, job: CompletionJob, send: Send, ahead: EnqueuedAttempt | None = None
    ) -> AIORouterError | None:
        """Run one job (``ahead``: already on its queue); the retryable error that calls for the next
        deployment, else None (done)."""
        hub = self._context.hub
        if ahead is None:
            require_listening(hub)
        self.job = job
        record = self._record
        record.provider, record.job_id = job.provider, job.request_id
        record.enqueued_at = record.started_at = record.first_content_at = 0.0
        subscription = self._subscription = ahead.subscription if ahead else hub.register(job.request_id)
        if self.client_left:  # gone while the previous attempt was being wound up
            subscription.client_gone()
        decision = automated_decision(self._plan.entry, fallbacks=self.failures)
        relay = self.relay = CompletionRelay(
            self._context.redis,
            self._context.settings,
            subscription,
            job,
            decision=decision,
            cleanup=self._context.cleanup,
            record=record,
        )
        relay.headers.extend(self._extra_headers)
        try:
            depth = relay.enqueued_ahead(ahead.queue_depth) if ahead else await relay.enqueue()
            limit = self._context.settings.provider(job.provider).queue_limit
            if 0 < limit < depth and await relay.withdraw():  # it found the queue full: shed it
                return QueueFull(headers=retry_after(UNAVAILABLE_RETRY_AFTER))
            try:
                if not await relay.wait_for_start():
                    return None
            except QueueTimeout as exc:
                if relay.finished:  # withdrawn from its queue: nobody ran it, another pool may
                    return exc
                raise
            first = await relay.first_content()
            if first is None:
                return None
            if first.kind == events.ERROR:
                error = relay.error_of(first)
                if first.meta.get("retryable") is True:
                    return error
                raise error
            if job.stream:
                await relay.send_stream(send, first)
            else:
                await relay.send_json(send, first)
            return None
        finally:
            self._subscription = None
            hub.unregister(subscription)
            # A client cut off for reading too slowly got part of the answer, as one that left did.
            left = self.client_left or subscription.too_slow
            await self._context.cleanup.bounded(relay.abandon_if_unfinished(client_left=left))


def require_listening(hub: ReplyHub) -> None:
    """Refuse to enqueue while the reply channel is being made again: the job's frames would be lost, and a
    worker drops a job whose channel nobody subscribes to unrun, leaving its request to wait for
    worker_lost."""
    if not hub.listening:
        raise ServiceUnavailable(
            "This ingress is reconnecting to Redis; retry shortly.",
            headers=retry_after(UNAVAILABLE_RETRY_AFTER),
        )


def _queue_full(context: IngressContext, plan: RoutePlan, deployment: Deployment, failures: int) -> bool:
    """Whether routing's statistics (read for least-busy and latency, at no extra round trip) show the
    deployment's queue at its ``queue_limit``.  Without them the enqueue itself tells: the queue's length
    after the push, and a job that found the queue full is taken back (:meth:`FallbackRun._attempt`)."""
    limit = context.settings.provider(deployment.provider).queue_limit
    stats = plan.stats.get(deployment_id(deployment)) if plan.stats else None
    return limit > 0 and stats is not None and failures == 0 and stats.queue_depth >= limit


async def _watch_disconnect(receive: Receive, run: FallbackRun) -> None:
    """Tell the request when its client goes away (``http.disconnect``, or a receive that fails)."""
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except OSError:
        pass
    run.client_gone()
