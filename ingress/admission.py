"""Admission of an authenticated request: its account's rate limit and, for a completion, its credit.

A completion is admitted in one Redis round trip: the rate-limit script (:mod:`shared.ratelimit`) and the
credit reservation script (:mod:`shared.credits`) ride in one pipeline, or, when the caller hands over
its first attempt's job (``enqueue_for``), in one atomic script with the job's enqueue
(``shared/lua/admit_enqueue.lua``): the credit is held only if the rate limit admits, and the job goes on
its queue only if both do and the plan that decided is the one the job's billing was built for (the API
key's; else the caller enqueues it with the right billing).  Refusals, in this order:

- a suspended account: 401 ``account_suspended`` (the API reference lists no 403; the key is valid but
  its account may not call the API, like a revoked key);
- the plan's rate limit: 429 ``rate_limit_exceeded`` with ``Retry-After`` (integer seconds, at most 120);
- the credit: 402 ``insufficient_quota`` when the available balance cannot cover the request's worst
  case (estimated prompt + ``max_tokens``, or ``credit_default_max_tokens``, at the model's prices).

A hold taken by a request refused for another reason is released at once (or, while Redis cannot be
reached, as soon as it can: :mod:`ingress.deferred_cleanup`).  Every authenticated request
counts once against its account's request limit (a 429 does not count) and every answer to one carries
``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset``: a request refused before admission (bad body,
unknown model) is counted when its error is answered (:meth:`Admission.annotate`, called by the
exception handler, which finds the :class:`Admission` in ``scope["state"]``).

An admitted completion's :class:`~shared.job_billing.JobBilling` travels in its job (every attempt's, when
the request falls back to another deployment): the worker that answers charges it.  A request that ends
without an answer (no worker took the job, every attempt failed, the client left) releases it with
:meth:`Admitted.close`; settling is idempotent, so the first of the two wins.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aredis
from redis.exceptions import RedisError
from starlette.types import Scope

from ingress import api_keys
from ingress.api_keys import ApiKeyRecord
from ingress.context import IngressContext
from ingress.deferred_cleanup import release_hold
from ingress.relay import RawHeaders
from shared import credits, ratelimit
from shared.credits import PendingReservation, Reservation
from shared.errors import AIORouterError, InsufficientQuota, ServiceUnavailable
from shared.job_billing import JobBilling
from shared.lua import LuaScript, ScriptCall, run_together
from shared.ratelimit import RateLimitDecision
from shared.redis_commands import Command
from shared.settings import ModelEntry

log = logging.getLogger(__name__)

STATE_KEY: Final = "admission"
"""Where the request's :class:`Admission` sits in ``scope["state"]``."""

SWEEP_INTERVAL: Final = 5.0
"""Seconds between two sweeps of expired credit reservations."""

RATE_LIMIT_HEADERS: Final = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


ADMIT_ENQUEUE: Final = LuaScript.compose("admit_enqueue", "ratelimit", "credit_reserve")


@dataclass(frozen=True, slots=True)
class Admitted:
    """An admitted completion: its rate-limit decision and the credit it holds."""

    decision: RateLimitDecision
    billing: JobBilling
    queue_depth: int | None = None  # the first job's queue length with it, when admission enqueued it

    @property
    def headers(self) -> RawHeaders:
        """The ``X-RateLimit-*`` headers of the response, as raw ASGI headers."""
        return [(name.lower().encode(), value.encode()) for name, value in self.decision.headers().items()]

    async def close(self, context: IngressContext) -> None:
        """Release what a request that ended without an answer still holds (no worker took the job,
        every attempt failed, the client left), and give back the tokens its token limit counted.

        Not needed after an answer: its worker settled the reservation in the round trip that published
        it.  Harmless anyway: a settled reservation stays as it was.  While Redis is unreachable, or if the
        shutdown cuts this short (:meth:`~ingress.deferred_cleanup.DeferredCleanup.bounded`), the release
        waits in the process' :class:`~ingress.deferred_cleanup.DeferredCleanup`."""
        try:
            await release_hold(context.redis, self.billing)
        except RedisError:
            context.cleanup.release_later(self.billing)
        except asyncio.CancelledError:
            context.cleanup.release_later(self.billing)
            raise


class Admission:
    """One authenticated request's dealings with its account's limits and credit."""

    def __init__(self, context: IngressContext, record: ApiKeyRecord, authorization: str | None) -> None:
        self._context = context
        self._record = record
        canonical = api_keys.parse_bearer(authorization)
        self._key_digest = api_keys.digest(canonical) if canonical else None
        self.decision: RateLimitDecision | None = None

    def attach(self, scope: Scope) -> Admission:
        """Let the exception handler find this admission (see :meth:`annotate`)."""
        scope.setdefault("state", {})[STATE_KEY] = self
        return self

    async def admit(
        self,
        model: ModelEntry,
        body: dict[str, Any],
        enqueue_for: Callable[[JobBilling], Sequence[Command]] | None = None,
    ) -> Admitted:
        """Count the request and hold its worst-case cost, in one round trip; raise 401/429/402.

        With ``enqueue_for`` (the enqueue commands of the first attempt's job, given the billing it
        carries), the job goes on its queue in that same round trip when the request is admitted under
        the API key's plan: :attr:`Admitted.queue_depth` then says so."""
        settings = self._context.settings
        prompt = credits.estimate_prompt_tokens(body)
        tokens = prompt + credits.max_completion_tokens(settings, model, body)
        cost = credits.cost_micros(model, prompt, tokens - prompt)
        check = self._check_call(tokens)
        attempts = len(model.deployments)  # each may wait for a worker before one renews the hold
        pending = PendingReservation.prepare(settings, self._record.account_id, cost, attempts=attempts)
        assumed: JobBilling | None = None
        try:
            if enqueue_for is None:
                limit_reply, credit_reply = await run_together(self._context.redis, [check, pending.call])
                depth_reply = None
            else:
                assumed = self._billing(pending.expected(), model, tokens, self._record.plan)
                call = _admit_enqueue_call(
                    check, pending.call, assumed.token_interval_us, enqueue_for(assumed)
                )
                [(limit_reply, credit_reply, depth_reply)] = await run_together(self._context.redis, [call])
        except RedisError as exc:
            # Its fate unknown (a frozen Redis may still run it): release the hold it may make, once
            # Redis answers; a release that comes first refuses the hold for good (credit_settle.lua).
            expected = assumed or self._billing(pending.expected(), model, tokens, None)
            self._context.cleanup.release_later(expected)
            raise _store_unreachable() from exc
        try:
            self.decision = ratelimit.decision_from_reply(limit_reply)
            self.decision.raise_if_refused()  # a 429 says when to retry: it goes before a 402
        except AIORouterError:
            if credit_reply and credit_reply[0]:
                await _release_quietly(self._context, pending.outcome(credit_reply))
            raise
        try:
            reservation = pending.outcome(credit_reply)
        except InsufficientQuota as exc:
            exc.headers.update(self.decision.headers())
            await self._refund_quietly(tokens)  # nothing will run: the tokens counted are given back
            raise
        if assumed is not None and depth_reply is not None:  # enqueued, with the billing assumed
            return Admitted(self.decision, assumed, queue_depth=int(depth_reply))
        return Admitted(self.decision, self._billing(reservation, model, tokens, self.decision.plan))

    def _billing(
        self, reservation: Reservation, model: ModelEntry, tokens: int, plan: str | None
    ) -> JobBilling:
        """The billing of a request estimated at ``tokens``, counted under ``plan``'s token limit (None:
        its tokens were maybe not counted, and none are given back)."""
        settings = self._context.settings
        return JobBilling.for_model(
            reservation,
            model,
            admitted_at=time.time(),
            counted_tokens=0 if plan is None else ratelimit.counted_tokens(settings, plan, tokens),
            token_interval_us=0 if plan is None else ratelimit.token_interval_us(settings, plan),
        )

    async def count(self) -> dict[str, str]:
        """Count a request that holds no credit (e.g. ``/v1/models``); its ``X-RateLimit-*`` headers, or
        raise 429/401."""
        decision = await self._count()
        decision.raise_if_refused()
        return decision.headers()

    async def peek(self) -> dict[str, str]:
        """The ``X-RateLimit-*`` headers of a request that does not count against the limits (a Files
        or Batches call: polling a batch must not eat the interactive budget); 401 for a suspended
        account, as for every request."""
        try:
            reply = await self._check_call(0, counted=False).run(self._context.redis)
        except RedisError as exc:
            raise _store_unreachable() from exc
        self.decision = ratelimit.decision_from_reply(reply)
        return self.decision.headers()

    async def annotate(self, error: AIORouterError) -> None:
        """Give an error answered after authentication its ``X-RateLimit-*`` headers, counting the request
        if it was refused before admission.  Best effort: the error goes out whatever happens here."""
        if error.code == "account_suspended" or any(n.lower() == "x-ratelimit-limit" for n in error.headers):
            return
        try:
            decision = self.decision or await self._count()
        except (AIORouterError, RedisError):
            return
        for name in RATE_LIMIT_HEADERS:
            error.headers.setdefault(name, decision.headers()[name])

    async def _refund_quietly(self, tokens: int) -> None:
        assert self.decision is not None
        settings, plan = self._context.settings, self.decision.plan
        refund = ratelimit.refund_call(
            self._record.account_id,
            tokens=ratelimit.counted_tokens(settings, plan, tokens),
            interval_us=ratelimit.token_interval_us(settings, plan),
        )
        if refund is None:
            return
        try:
            await refund.run(self._context.redis)
        except RedisError:
            log.warning("could not refund %d counted tokens of a refused request", tokens)

    async def _count(self) -> RateLimitDecision:
        try:
            reply = await self._check_call(0).run(self._context.redis)
        except RedisError as exc:
            raise _store_unreachable() from exc
        self.decision = ratelimit.decision_from_reply(reply)
        return self.decision

    def _check_call(self, tokens: int, *, counted: bool = True) -> ScriptCall:
        return ratelimit.check_call(
            self._context.settings,
            account_id=self._record.account_id,
            key_plan=self._record.plan,
            api_key_digest=self._key_digest,
            tokens=tokens,
            counted=counted,
        )


async def _release_quietly(context: IngressContext, reservation: Reservation) -> None:
    try:
        await credits.release(context.redis, reservation)
    except RedisError:
        log.warning("could not release reservation %s; the sweep will", reservation.id)


def _store_unreachable() -> ServiceUnavailable:
    return ServiceUnavailable("The account store is unreachable; retry shortly.")


def _admit_enqueue_call(
    check: ScriptCall, reserve: ScriptCall, interval_us: int, enqueue: Sequence[Command]
) -> ScriptCall:
    """:data:`ADMIT_ENQUEUE` with the rate limit's and the credit hold's keys and arguments, and the
    enqueue commands flattened (each: its argument count, then the command)."""
    commands: list[Any] = []
    for command, _ in enqueue:
        commands += [len(command), *command]
    counts = [len(check.keys), len(check.args), len(reserve.args), interval_us]
    return ScriptCall(
        ADMIT_ENQUEUE, [*check.keys, *reserve.keys], [*counts, *check.args, *reserve.args, *commands]
    )


def admission_of(scope: Scope) -> Admission | None:
    """The request's :class:`Admission`, if it got past authentication."""
    admission = scope.get("state", {}).get(STATE_KEY)
    return admission if isinstance(admission, Admission) else None


async def sweep_reservations(redis: aredis.Redis, *, interval: float = SWEEP_INTERVAL) -> None:
    """Release reservations past their deadline (their request's process died) until cancelled; every
    ingress process runs this, which is harmless: each release is one idempotent script."""
    while True:
        try:
            released = await credits.sweep_expired(redis)
            if released:
                log.info("released %d expired credit reservations", released)
        except RedisError as exc:
            log.warning("reservation sweep failed (%s); retrying in %.0fs", exc, interval)
        await asyncio.sleep(interval)
