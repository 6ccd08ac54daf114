"""Per-account rate limits, enforced atomically in Redis and shared by every ingress process.

One ``EVALSHA`` of ``lua/ratelimit.lua`` per request runs GCRA (the generic cell rate algorithm) on Redis
server time, so any number of replicas, whatever their clocks, together admit exactly the plan's limit.
The script reads the account's plan and status itself: a plan change or a suspension takes effect on the
next request, and a suspended account is refused in the same round trip.

A limit of N per minute admits a burst of N, then one more every 60/N seconds.  A plan may also limit
tokens per minute: a request is then counted for its estimated tokens (prompt estimate + completion
cap), admitted only if both limits have room, and :func:`refund_call` gives back what it did not use.
The :class:`RateLimitDecision` carries the ``X-RateLimit-*`` headers, and ``Retry-After`` when refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from shared import keys
from shared.errors import AuthenticationError, RateLimitExceeded
from shared.lua import LuaScript, ScriptCall
from shared.settings import Plan, Settings

PERIOD_US = 60_000_000
"""Plans state their limits per minute."""

MAX_RETRY_AFTER = 120
"""``Retry-After`` is capped at this many seconds."""

_CHECK = LuaScript.load("ratelimit")
_REFUND = LuaScript.load("ratelimit_refund")
_SUSPENDED = -1


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    allowed: bool
    plan: str
    limit: int  # requests per minute
    remaining: int
    reset_seconds: int  # until the request limit is fully restored
    retry_after_seconds: int = 0  # 0 when allowed
    refused_by: str = ""  # "requests" or "tokens" when refused
    token_limit: int = 0  # tokens per minute; 0 = none
    token_remaining: int = 0
    token_reset_seconds: int = 0

    def headers(self) -> dict[str, str]:
        """The ``X-RateLimit-*`` headers every authenticated response carries (plus ``Retry-After``)."""
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_seconds),
        }
        if self.token_limit:
            headers["X-RateLimit-Limit-Tokens"] = str(self.token_limit)
            headers["X-RateLimit-Remaining-Tokens"] = str(self.token_remaining)
            headers["X-RateLimit-Reset-Tokens"] = str(self.token_reset_seconds)
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_seconds)
        return headers

    def raise_if_refused(self) -> None:
        """Raise 429 ``rate_limit_exceeded`` (with every header) unless the request was admitted."""
        if self.allowed:
            return
        if self.refused_by == "tokens":
            what = f"{self.token_limit} tokens per minute"
        else:
            what = f"{self.limit} requests per minute"
        raise RateLimitExceeded(
            f"Rate limit of {what} reached for plan {self.plan!r}; "
            f"retry after {self.retry_after_seconds} seconds.",
            headers=self.headers(),
        )


def plan_table(settings: Settings) -> list[str | int]:
    """The script's plan table: name, requests and tokens per minute, for every plan in the settings."""
    return [
        item
        for plan in settings.plans.values()
        for item in (plan.name, plan.requests_per_minute, plan.tokens_per_minute)
    ]


def check_call(
    settings: Settings,
    *,
    account_id: str,
    key_plan: str,
    api_key_digest: str | None = None,
    tokens: int = 0,
    counted: bool = True,
) -> ScriptCall:
    """Count one request against the account's limits: the script call, to make among others in one
    round trip (:func:`shared.lua.run_together`); :func:`decision_from_reply` reads its reply, and the
    caller sends ``decision.headers()``.

    ``key_plan`` (the API key's plan) decides the limits when the account has no record or names a plan
    the settings do not know.  ``api_key_digest`` names the key whose ``last_used`` an admitted request
    sets.  ``tokens`` is the request's estimated tokens, counted if the plan limits tokens.  Not
    ``counted``: the limits are only read (for the headers of a request that does not count), and only
    a suspended account is refused.
    """
    fallback = _plan(settings, key_plan)
    script_keys = [
        keys.account(account_id),
        keys.rate_limit(account_id, "requests"),
        keys.rate_limit(account_id, "tokens"),
    ]
    if api_key_digest is not None:
        script_keys.append(keys.api_key(api_key_digest))
    args: list[Any] = [
        max(0, tokens) if counted else 0,
        PERIOD_US,
        1 if counted else 0,
        fallback.name,
        fallback.requests_per_minute,
        fallback.tokens_per_minute,
        *plan_table(settings),
    ]
    return ScriptCall(_CHECK, script_keys, args)


def decision_from_reply(reply: Any) -> RateLimitDecision:
    """The decision in a reply of :func:`check_call`'s script; raises ``account_suspended``."""
    (
        admitted,
        plan,
        refused_by,
        retry_us,
        limit,
        remaining,
        reset_us,
        token_limit,
        token_remaining,
        token_reset_us,
    ) = reply
    if admitted == _SUSPENDED:
        raise AuthenticationError("This account is suspended.", code="account_suspended")
    return RateLimitDecision(
        allowed=admitted == 1,
        plan=_text(plan),
        limit=int(limit),
        remaining=max(0, int(remaining)),
        reset_seconds=_seconds(reset_us),
        retry_after_seconds=min(MAX_RETRY_AFTER, max(1, _seconds(retry_us))) if admitted == 0 else 0,
        refused_by=_text(refused_by),
        token_limit=int(token_limit),
        token_remaining=max(0, int(token_remaining)),
        token_reset_seconds=_seconds(token_reset_us),
    )


def token_interval_us(settings: Settings, plan: str) -> int:
    """Microseconds one token weighs in ``plan``'s token limit; 0 when the plan limits no tokens."""
    limit = _plan(settings, plan).tokens_per_minute
    return PERIOD_US // limit if limit > 0 else 0


def counted_tokens(settings: Settings, plan: str, tokens: int) -> int:
    """The tokens a request estimated at ``tokens`` counts against ``plan``'s token limit: never more than
    the whole limit (the script counts an estimate above it as the limit), 0 when the plan limits none.
    What a refund may give back at most (:func:`refund_call`)."""
    return min(max(0, tokens), _plan(settings, plan).tokens_per_minute)


def refund_call(
    account_id: str, *, tokens: int, interval_us: int, once_key: str | None = None
) -> ScriptCall | None:
    """Give back ``tokens`` a request was counted for but did not use, at ``interval_us`` per token
    (:func:`token_interval_us` of the plan its decision named); None when there is nothing to give back.
    With ``once_key`` (a hash, e.g. the request's credit reservation record) the refund is marked there
    and given once however often it is sent."""
    if interval_us <= 0 or tokens <= 0:
        return None
    if once_key is None:
        return ScriptCall(_REFUND, [keys.rate_limit(account_id, "tokens")], [tokens, interval_us])
    ttl = keys.CREDIT_RESERVATION_TOMBSTONE_TTL  # a mark on a record that is gone lives as a tombstone
    return ScriptCall(_REFUND, [keys.rate_limit(account_id, "tokens"), once_key], [tokens, interval_us, ttl])


def _plan(settings: Settings, name: str) -> Plan:
    return settings.plans.get(name) or settings.plans[settings.default_plan]


def _seconds(microseconds: Any) -> int:
    return math.ceil(int(microseconds) / 1_000_000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
