"""Settlement: when a job ends, charge its account for what it used and record the attempt's usage.

:func:`billing_commands` builds, for a job that ended with a status and (on success) its token usage:

- on success, the settlement of the request's credit reservation (:class:`~shared.job_billing.JobBilling`):
  its tokens at the prices quoted at admission (beyond the hold only as far as the available credit
  goes), the rest released; and the
  refund of the tokens the account's token limit counted but the request did not use;
- the usage record (account, key, model, provider, tokens, cost, latency, status, request id) and its
  day's per-model totals (:mod:`shared.usage`), for every job a worker ran, failed or not.

A job stopped because nobody waits for it any more (:class:`~shared.errors.IngressGone`: its ingress
died, or lost Redis and failed its requests) releases the reservation itself, and gives back every token
the token limit counted for it, since its ingress may not be there to: nobody received the answer, so
nobody pays for it.  Its usage record keeps the tokens the
upstream produced until then, at no cost.

A job stopped because its client left after it started (the ingress cancelled it, and left its
settlement to the worker: :meth:`ingress.relay.CompletionRelay.abandon_if_unfinished`) is charged like a
completed one for what it produced until then (``client_left``): the prompt and the completion tokens so
far, at the prices quoted at admission, whoever listens on its reply channel (its tokens were produced
for a client that was there), with the token limit's refund of what it did not use and a usage record
whose status is :data:`shared.usage.CLIENT_CLOSED`.

Any other failed job leaves the reservation alone: the ingress may still fall back to another deployment
under the same reservation, and it releases whatever is still held when the request ends without an answer
(:meth:`ingress.admission.Admitted.close`).  Settling is idempotent, so the first of the two wins.

They are plain Redis commands (the scripts as ``EVAL``, which never meets ``NOSCRIPT``), so the worker
sends them in the round trip that publishes the job's final frame: whoever sees the answer also sees
the charge.  A charged job's commands are all idempotent (the settlement by the reservation's state, the
refund and the usage record by marks on the reservation's record), so a round trip whose reply was lost
is sent again whole: the charge, its refund and its record land together or not at all.  A job without
billing (enqueued by something else than the ingress) is only recorded.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from shared import credits, keys, ratelimit, usage
from shared.errors import AIORouterError, IngressGone
from shared.job_billing import JobBilling
from shared.jobs import CompletionJob
from shared.lua import ScriptCall
from shared.redis_commands import Command


def billing_commands(
    job: CompletionJob,
    *,
    error: AIORouterError | None,
    token_usage: Mapping[str, Any] | None = None,
    provider: str | None = None,
    now: float | None = None,
    client_left: bool = False,
) -> list[Command]:
    """The commands that charge a completed ``job`` (``error`` None) and record its usage, whose status is
    :data:`shared.usage.OK` or the error's code (:data:`shared.usage.CLIENT_CLOSED` with ``client_left``)."""
    commands, _ = final_commands(
        job, error=error, token_usage=token_usage, provider=provider, now=now, client_left=client_left
    )
    return commands


def final_commands(
    job: CompletionJob,
    *,
    error: AIORouterError | None,
    token_usage: Mapping[str, Any] | None = None,
    provider: str | None = None,
    now: float | None = None,
    client_left: bool = False,
) -> tuple[list[Command], list[Command]]:
    """:func:`billing_commands`, and apart from them the part that is safe to send again when a round
    trip's fate is unknown: the settlement of the job's reservation (its release and token refund for a
    job whose ingress is gone, none for another failed job) and, for a charged job, its token refund and
    usage record, which the reservation's record marks as done (``refunded``, ``recorded``) so that a
    resend writes neither twice.  The job's billing is read once for both.

    With ``client_left`` (``error`` None, ``token_usage`` what the job produced before it was stopped, None
    for nothing) the job is charged as a completed one, with nobody required on its reply channel."""
    now = time.time() if now is None else now
    if client_left:
        status = usage.CLIENT_CLOSED
    else:
        status = usage.OK if error is None else error.code or error.type
    billing = JobBilling.of_job(job)
    charged = error is None
    counted = charged or isinstance(error, IngressGone)
    prompt, completion, cached, reasoning = usage_tokens(token_usage) if counted else (0, 0, 0, 0)
    cost = billing.cost(prompt, completion, cached) if billing is not None and charged else 0
    # Charged only while its ingress listens, unless nobody is meant to: a batch line, or a job whose
    # client left (what it produced was streamed to the client, or would have been).
    listened = job.reply_to != keys.BATCH_REPLY_CHANNEL and not client_left
    heard_on = job.reply_to if listened else None
    charge = _charge_commands(billing, error, cost, heard_on)
    commands = list(charge)
    if billing is not None and charged:
        refund = _refund_call(billing, billing.counted_tokens - prompt - completion)
        if refund is not None:
            commands.append(refund.command())
    if job.account_id:
        started = billing.admitted_at if billing is not None else float(job.created)
        record = usage.UsageRecord(
            request_id=job.request_id,
            account_id=job.account_id,
            key_id=job.key_id,
            model=job.model,
            provider=provider or job.provider,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_micros=cost,
            cached_tokens=cached,
            reasoning_tokens=reasoning,
            latency_ms=max(0, round((now - started) * 1000)),
            status=status,
            at=now,
        )
        if billing is not None and charged:  # the record says what the settlement charged
            reservation = keys.credit_reservation(billing.reservation.id)
            commands.append(usage.charged_usage_call(record, reservation).command())
        else:
            commands.extend(usage.usage_commands(record))
    if billing is not None and charged:  # the settlement, its refund and its usage record: each once
        return commands, list(commands)
    return commands, charge


def _charge_commands(
    billing: JobBilling | None, error: AIORouterError | None, cost: int, heard_on: str | None
) -> list[Command]:
    if billing is None:
        return []
    if error is None:  # charged only if the answer's channel still has its ingress (see credit_settle.lua)
        return [credits.settle_call(billing.reservation, cost, heard_on=heard_on).command()]
    if isinstance(error, IngressGone):  # released as its ingress would have: every counted token back
        refund = _refund_call(billing, billing.counted_tokens)
        release = credits.settle_call(billing.reservation, 0).command()
        return [release] if refund is None else [release, refund.command()]
    return []


def _refund_call(billing: JobBilling, tokens: int) -> ScriptCall | None:
    """Give back ``tokens`` of those the account's token limit counted for the request, once (the mark on
    its reservation's record: whoever of the worker and the ingress comes first)."""
    return ratelimit.refund_call(
        billing.reservation.account_id,
        tokens=tokens,
        interval_us=billing.token_interval_us,
        once_key=keys.credit_reservation(billing.reservation.id),
    )


def usage_tokens(token_usage: Mapping[str, Any] | None) -> tuple[int, int, int, int]:
    """Prompt, completion, cached prompt and reasoning tokens of an OpenAI-shaped usage object."""
    if not token_usage:
        return 0, 0, 0, 0
    prompt_details = token_usage.get("prompt_tokens_details")
    completion_details = token_usage.get("completion_tokens_details")
    return (
        _count(token_usage.get("prompt_tokens")),
        _count(token_usage.get("completion_tokens")),
        _count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, Mapping) else 0,
        _count(completion_details.get("reasoning_tokens")) if isinstance(completion_details, Mapping) else 0,
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
