"""``POST /v1/chat/completions``: a raw ASGI endpoint, because it is the hot path.

Order of checks: API key (401), ``Content-Type`` (400 ``unsupported_content_type``: the API reference
lists no 415, so a non-JSON body is a malformed request), body size (413), JSON, validation (400), model
(404), routing (503 at once when every deployment's breaker is open; :mod:`ingress.routing`), then
admission: rate limit and credit (401 suspended, 429, 402; :mod:`ingress.admission`), in the same round
trip as the first attempt's enqueue.  One rq job per attempt, falling back along the route until a
deployment serves the request (:mod:`ingress.fallback`), and its frames relayed (:mod:`ingress.relay`).
The ``API-Version`` and ``X-Request-Id`` headers come from :mod:`ingress.middleware`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

from redis.exceptions import RedisError
from starlette.types import Receive, Scope, Send

from ingress.admission import Admission
from ingress.context import IngressContext, ingress_context
from ingress.fallback import EnqueuedAttempt, FallbackRun, first_deployment, require_listening
from ingress.job_control import completion_enqueue_commands
from ingress.request_body import check_json_content_type, read_body
from ingress.request_log import log_request
from ingress.request_record import RequestRecord
from ingress.routing import UNAVAILABLE_RETRY_AFTER, retry_after
from ingress.validation import parse_json_object, validate_chat_request
from shared.errors import AIORouterError
from shared.job_billing import EXTRA_KEY, JobBilling
from shared.jobs import CompletionJob
from shared.redis_commands import Command
from shared.settings import Deployment

CLIENT_CLOSED = 499  # the status recorded for a request whose client left (nginx's convention)


class ChatCompletionsEndpoint:
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        context = ingress_context(scope["app"])
        record = RequestRecord(request_id=scope.get("state", {}).get("request_id") or "")
        trace = context.tracer.start(record) if context.tracer is not None else None
        try:
            await self._serve(context, record, scope, receive, send, trace.traceparent if trace else None)
        except AIORouterError as exc:
            record.failed(exc)
            if exc.status == 503 and "Retry-After" not in exc.headers:  # a worker lost, Redis unreachable
                exc.headers.update(retry_after(UNAVAILABLE_RETRY_AFTER))
            raise
        except Exception:
            record.status = 500
            raise
        finally:
            record.ended_at = time.perf_counter()
            context.metrics.record(record)
            log_request(record)
            if trace is not None:
                trace.end(record)

    async def _serve(
        self,
        context: IngressContext,
        record: RequestRecord,
        scope: Scope,
        receive: Receive,
        send: Send,
        traceparent: str | None,
    ) -> None:
        headers = _request_headers(scope)
        authorization = headers.get(b"authorization", b"").decode("latin-1") or None
        key = await context.auth.authenticate(authorization)
        admission = Admission(context, key, authorization).attach(scope)
        check_json_content_type(headers.get(b"content-type"))
        raw = await read_body(receive, headers.get(b"content-length"), context.settings.max_body_bytes)
        if raw is None:
            record.status = CLIENT_CLOSED
            return  # the client left while sending its body
        request = validate_chat_request(parse_json_object(raw))
        record.model, record.stream = request.model, request.stream
        plan = await context.router.route(request.model, request.preferences)
        state = scope.get("state", {})
        extra = {"client_request_id": state.get("request_id"), "api_version": state.get("api_version")}
        created = int(time.time())  # every attempt's answer carries the time the request was accepted
        if traceparent:
            extra["traceparent"] = traceparent  # W3C trace context: the worker's spans join this trace

        def job_for(deployment: Deployment, billing: JobBilling) -> CompletionJob:
            """A fresh job (its own id) of this request on ``deployment``: one per attempt."""
            return CompletionJob(
                request_id=uuid.uuid4().hex,
                reply_to=context.hub.channel,
                model=plan.entry.id,
                provider=deployment.provider,
                upstream_model=deployment.upstream_model,
                stream=request.stream,
                include_usage=request.include_usage,
                body=request.body,
                created=created,
                account_id=key.account_id,
                key_id=key.key_id,
                extra={**extra, EXTRA_KEY: billing.to_wire()},
            )

        require_listening(context.hub)
        first = first_deployment(context, plan)
        prepared: list[EnqueuedAttempt] = []

        def enqueue_first(billing: JobBilling) -> list[Command]:
            """The first attempt's job, enqueued by the admission's round trip: registered for its frames
            before it can be on a queue."""
            assert first is not None
            job = job_for(first, billing)
            prepared.append(EnqueuedAttempt(first, job, context.hub.register(job.request_id), 0))
            return completion_enqueue_commands(job, context.settings)

        try:
            admitted = await admission.admit(plan.entry, request.body, enqueue_first if first else None)
        except BaseException as exc:
            for attempt in prepared:
                context.hub.unregister(attempt.subscription)
                if isinstance(exc.__cause__, RedisError):  # its round trip may still run: the job too
                    context.cleanup.abandon_later(
                        attempt.deployment.provider, attempt.job.request_id, started=False
                    )
            raise
        record.admitted_at = time.perf_counter()
        enqueued = None
        for attempt in prepared:
            if admitted.queue_depth is None:  # admitted under another plan than the key's: not enqueued
                context.hub.unregister(attempt.subscription)
            else:
                enqueued = replace(attempt, queue_depth=admitted.queue_depth)

        run = FallbackRun(
            context,
            plan,
            lambda deployment: job_for(deployment, admitted.billing),
            record,
            extra_headers=admitted.headers,
            enqueued=enqueued,
        )
        try:
            await run.run(receive, send)
            if run.client_left and record.error_code is None:  # not a stream the server ended in error
                record.status = CLIENT_CLOSED
        finally:
            # An answer's worker charged it already, and so does (what it produced) the worker of a job
            # whose client left after its start; an abandoned job's relay released it before stopping it.
            if run.relay is None or not run.relay.hold_settled:
                await context.cleanup.bounded(admitted.close(context))  # release what it still holds


def _request_headers(scope: Scope) -> dict[bytes, bytes]:
    """The headers the endpoint reads; of a repeated one, the first (as Starlette's ``headers.get``
    reads it on every other route)."""
    wanted: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in _WANTED_HEADERS and name not in wanted:
            wanted[name] = value
    return wanted


_WANTED_HEADERS = frozenset({b"authorization", b"content-type", b"content-length"})
