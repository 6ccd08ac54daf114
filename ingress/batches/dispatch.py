"""Putting batch lines into their pools' batch lanes, credit first.

Each line holds its worst-case cost, as an interactive request does, at its plan's batch prices
(``Plan.batch_price_factor`` of the model's): the worker that answers settles it to the tokens used.
The holds of a round's lines are made in one round trip; then one transaction enqueues their jobs on
the lanes, records them in flight and moves each batch's cursor, so a driver killed at any moment
leaves every line either dispatched and recorded, or neither.  A line whose hold is refused fails with
``insufficient_quota``, and so do the rest of its batch's lines; a line whose job cannot be written
(its body refused by the serializer) fails alone, its hold released, and the round goes on.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import redis.asyncio as aredis

from ingress.batches.attempts import Attempt
from ingress.batches.batch_run import BatchRun
from ingress.provider_preferences import NO_PREFERENCES, ProviderPreferences
from shared import batch_lines, credits, keys
from shared.batch_lines import EXTRA_KEY as LINE_KEY
from shared.batch_lines import LineRef
from shared.credits import PendingReservation
from shared.errors import InsufficientQuota
from shared.job_billing import EXTRA_KEY as BILLING_KEY
from shared.job_billing import JobBilling
from shared.jobs import CompletionJob, enqueue_commands
from shared.lua import run_together
from shared.redis_commands import replay
from shared.settings import Deployment, ModelEntry, Settings

RESERVATION_GRACE = 3600.0  # seconds a line's hold outlasts an interactive one's: it may wait in its lane


@dataclass(frozen=True, slots=True)
class PlannedLine:
    run: BatchRun
    index: int
    custom_id: str
    entry: ModelEntry
    deployment: Deployment
    body: dict[str, object]
    attempt: int  # 1 for a line's first run
    fresh: bool  # a line never dispatched before (it moves the cursor)
    preferences: ProviderPreferences = NO_PREFERENCES  # the line's ``provider`` field, for its next runs


def line_cost(settings: Settings, entry: ModelEntry, body: dict[str, object], price_factor: float) -> int:
    prompt = credits.estimate_prompt_tokens(body)
    completion = credits.max_completion_tokens(settings, entry, body)
    return credits.price_micros(prompt, entry.input_price_per_m * price_factor) + credits.price_micros(
        completion, entry.output_price_per_m * price_factor
    )


async def dispatch(
    redis: aredis.Redis, settings: Settings, planned: list[PlannedLine], price_factors: dict[str, float]
) -> list[PlannedLine]:
    """Hold credit for and enqueue ``planned``; the lines refused for want of credit (already recorded
    as failed with ``insufficient_quota``, in the same transaction)."""
    if not planned:
        return []
    ttl = credits.reservation_ttl(settings) + RESERVATION_GRACE
    pending = [
        PendingReservation.prepare(
            settings,
            line.run.account_id,
            line_cost(settings, line.entry, line.body, price_factors.get(line.run.account_id, 1.0)),
            ttl=ttl,
        )
        for line in planned
    ]
    replies = await run_together(redis, [p.call for p in pending])
    refused: list[PlannedLine] = []
    unsendable: list[tuple[PlannedLine, str]] = []  # lines whose job could not be written, and why
    broke: set[str] = set()  # batches out of credit: none of their later lines run
    commands = []
    attempts: list[tuple[PlannedLine, Attempt, bytes]] = []
    now = time.time()
    for line, hold, reply in zip(planned, pending, replies, strict=True):
        try:
            reservation = hold.outcome(reply)
        except InsufficientQuota:
            broke.add(line.run.id)
            refused.append(line)
            continue
        if line.run.id in broke:
            await credits.release(redis, reservation)
            refused.append(line)
            continue
        factor = price_factors.get(line.run.account_id, 1.0)
        billing = JobBilling(
            reservation=reservation,
            input_price_per_m=line.entry.input_price_per_m * factor,
            output_price_per_m=line.entry.output_price_per_m * factor,
            admitted_at=now,
            cached_input_price_per_m=(
                None
                if line.entry.cached_input_price_per_m is None
                else line.entry.cached_input_price_per_m * factor
            ),
        )
        job = CompletionJob(
            request_id=uuid.uuid4().hex,
            reply_to=keys.BATCH_REPLY_CHANNEL,
            model=line.entry.id,
            provider=line.deployment.provider,
            upstream_model=line.deployment.upstream_model,
            stream=False,
            include_usage=False,
            body=dict(line.body),
            created=int(now),
            account_id=line.run.account_id,
            extra={
                BILLING_KEY: billing.to_wire(),
                LINE_KEY: LineRef(line.run.id, line.index, line.custom_id).to_wire(),
            },
        )
        attempt = Attempt(
            index=line.index,
            custom_id=line.custom_id,
            job_id=job.request_id,
            pool=line.deployment.provider,
            attempt=line.attempt,
            reservation=reservation,
            model=line.entry.id,
            body=dict(line.body),
            dispatched_at=now,
            preferences=line.preferences,
        )
        try:
            line_commands = enqueue_commands(
                job,
                job_timeout=settings.job_timeout,
                result_ttl=0,  # the line's result is kept by the batch: the job's own goes at once
                failure_ttl=settings.failure_ttl,
                queue=keys.batch_lane(line.deployment.provider),
            )
            wire = attempt.to_wire()
        except (TypeError, ValueError) as exc:  # orjson refused the body: this line fails, not the round
            await credits.release(redis, reservation)
            unsendable.append((line, f"This line's request could not be queued: {exc}."))
            continue
        commands.extend(line_commands)
        attempts.append((line, attempt, wire))
    cursors: dict[str, int] = {}
    for line in planned:
        if line.fresh:
            cursors[line.run.id] = max(cursors.get(line.run.id, 0), line.index + 1)
    async with redis.pipeline(transaction=True) as pipe:
        replay(pipe, commands)
        for line, attempt, wire in attempts:
            pipe.hset(keys.batch_inflight(line.run.id), str(attempt.index), wire)
        for line in refused:
            ref = LineRef(line.run.id, line.index, line.custom_id)
            message = "The account ran out of credit before this line could run."
            error = batch_lines.error_line(ref, "insufficient_quota", message)
            pipe.execute_command(*batch_lines.record_call(ref, batch_lines.ERROR, error).command()[0])
        for line, message in unsendable:
            ref = LineRef(line.run.id, line.index, line.custom_id)
            error = batch_lines.error_line(ref, "invalid_request", message)
            pipe.execute_command(*batch_lines.record_call(ref, batch_lines.ERROR, error).command()[0])
        for batch_id, cursor in cursors.items():
            pipe.hset(keys.batch_record(batch_id), "cursor", cursor)
        if broke:
            for batch_id in broke:
                pipe.hset(keys.batch_record(batch_id), "ending", "insufficient_quota")
        await pipe.execute()
    for line, attempt, _ in attempts:
        line.run.inflight[attempt.index] = attempt
    return refused
