"""Per-account request rate limits, enforced atomically in Redis and shared by every ingress process.

One ``EVALSHA`` of ``lua/ratelimit.lua`` per request runs GCRA (the generic cell rate algorithm) on Redis
server time, so any number of replicas, whatever their clocks, together admit exactly the plan's limit.
The script reads the account's plan and status itself: a plan change or a suspension takes effect on the
next request, and a suspended account is refused in the same round trip.

A limit of N per minute admits a burst of N, then one request every 60/N seconds.  The
:class:`RateLimitDecision` carries the ``X-RateLimit-*`` headers, and ``Retry-After`` when refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis.asyncio as aredis

from shared import keys
from shared.errors import AuthenticationError, RateLimitExceeded
from shared.lua import LuaScript
from shared.settings import Settings

PERIOD_US = 60_000_000
"""Plans state their limits per minute."""

MAX_RETRY_AFTER = 120
"""``Retry-After`` is capped at this many seconds."""

_SCRIPT = LuaScript.load("ratelimit")
_SUSPENDED = -1


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    allowed: bool
    plan: str
    limit: int
    remaining: int
    reset_seconds: int  # until the limit is fully restored
    retry_after_seconds: int  # 0 when allowed

    def headers(self) -> dict[str, str]:
        """The ``X-RateLimit-*`` headers every authenticated response carries (plus ``Retry-After``)."""
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_seconds)
        return headers

    def raise_if_refused(self) -> None:
        """Raise 429 ``rate_limit_exceeded`` (with every header) unless the request was admitted."""
        if not self.allowed:
            raise RateLimitExceeded(
                f"Rate limit of {self.limit} requests per minute reached for plan {self.plan!r}; "
                f"retry after {self.retry_after_seconds} seconds.",
                headers=self.headers(),
            )


def plan_limits(settings: Settings) -> list[str | int]:
    """The script's plan table: name, requests per minute, for every plan in the settings."""
    return [item for plan in settings.plans.values() for item in (plan.name, plan.requests_per_minute)]


async def check_request(
    redis: aredis.Redis,
    settings: Settings,
    *,
    account_id: str,
    key_plan: str,
    api_key_digest: str | None = None,
) -> RateLimitDecision:
    """Count one request against the account's limit and decide; the caller sends ``decision.headers()``.

    ``key_plan`` (the API key's plan) decides the limit when the account has no record or names a plan
    the settings do not know.  ``api_key_digest`` names the key whose ``last_used`` an admitted request
    sets.  A suspended account raises :class:`AuthenticationError` (``account_suspended``).
    """
    fallback = settings.plans.get(key_plan) or settings.plans[settings.default_plan]
    script_keys = [keys.account(account_id), keys.rate_limit(account_id, "requests")]
    if api_key_digest is not None:
        script_keys.append(keys.api_key(api_key_digest))
    args = [1, PERIOD_US, fallback.name, fallback.requests_per_minute, *plan_limits(settings)]
    admitted, limit, remaining, reset_us, retry_us, plan = await _SCRIPT(redis, script_keys, args)
    if admitted == _SUSPENDED:
        raise AuthenticationError("This account is suspended.", code="account_suspended")
    return RateLimitDecision(
        allowed=admitted == 1,
        plan=plan.decode() if isinstance(plan, bytes) else str(plan),
        limit=int(limit),
        remaining=max(0, int(remaining)),
        reset_seconds=_seconds(reset_us),
        retry_after_seconds=min(MAX_RETRY_AFTER, max(1, _seconds(retry_us))) if admitted == 0 else 0,
    )


def _seconds(microseconds: int) -> int:
    return math.ceil(int(microseconds) / 1_000_000)
