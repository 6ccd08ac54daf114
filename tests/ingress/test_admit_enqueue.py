"""The first attempt's job goes on its queue in the admission's round trip (one atomic script): only when
the rate limit and the credit admit it, and only with the billing of the plan that decided."""

from __future__ import annotations

from typing import Any

from shared import credits, keys, ratelimit
from shared.job_billing import JobBilling
from tests.ingress.conftest import Ingress, IngressFactory

TOKEN_PLANS = {"plans": {"metered": {"requests_per_minute": 60, "tokens_per_minute": 600_000}}}


async def commands_run(ingress: Ingress, name: str) -> int:
    """How many times the private Redis ran ``name`` so far."""
    stats: dict[str, Any] = await ingress.redis.info("commandstats")
    return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))


async def queued(ingress: Ingress) -> int:
    return int(await ingress.redis.llen(keys.rq_queue_key("simulated")))


async def test_an_admitted_requests_job_is_queued_in_the_admissions_round_trip(ingress: Ingress) -> None:
    """No MULTI/EXEC enqueue of its own: the job is on its queue, carrying the hold, after one script."""
    multis = await commands_run(ingress, "multi")
    task = ingress.chat_task()
    taken = await ingress.worker.take()
    billing = JobBilling.of_job(taken.job)
    assert billing is not None and billing.reservation.amount > 0
    assert (await credits.get_balance(ingress.redis, "acct-test")).reserved == billing.reservation.amount
    assert await commands_run(ingress, "multi") == multis
    await ingress.worker.start(taken)
    await ingress.worker.done(taken, "hi")
    assert (await task).status_code == 200


async def test_a_rate_limited_request_holds_nothing_and_queues_nothing(
    ingress_factory: IngressFactory,
) -> None:
    """Refused by the rate limit: 429, no credit held even for a moment, no job on the queue."""
    async with ingress_factory(plans={"developer": {"requests_per_minute": 1}}) as ingress:
        first = ingress.chat_task()
        taken = await ingress.worker.take()
        reservations = await ingress.redis.zcard(keys.CREDIT_RESERVATIONS)
        refused = await ingress.chat()
        assert refused.status_code == 429
        assert await queued(ingress) == 0
        assert await ingress.redis.zcard(keys.CREDIT_RESERVATIONS) == reservations  # never held
        await ingress.worker.start(taken)
        await ingress.worker.done(taken, "hi")
        assert (await first).status_code == 200


async def test_a_request_decided_by_another_plan_than_its_keys_carries_that_plans_billing(
    ingress_factory: IngressFactory,
) -> None:
    """The account moved to a plan with a token limit after its key was read: the script leaves the job
    it built for the key's plan off the queue, and the request's one job carries the deciding plan's
    token interval."""
    async with ingress_factory(**TOKEN_PLANS) as ingress:
        await ingress.redis.hset(keys.account("acct-test"), "plan", "metered")  # the key still says developer
        multis = await commands_run(ingress, "multi")
        task = ingress.chat_task()
        taken = await ingress.worker.take()
        billing = JobBilling.of_job(taken.job)
        assert billing is not None
        assert billing.token_interval_us == ratelimit.PERIOD_US // 600_000
        assert await queued(ingress) == 0  # one job, not two
        assert await commands_run(ingress, "multi") == multis + 1  # enqueued on its own
        await ingress.worker.start(taken)
        await ingress.worker.done(taken, "hi")
        assert (await task).status_code == 200
