"""The per-deployment circuit breaker, shared through Redis by every worker and ingress process.

A deployment (one provider serving one upstream model, named by its ``deployment_id``) is::

    closed ──N failures within `window`──▶ open ──`cooldown` elapsed──▶ half-open
      ▲                                      ▲                              │ exactly one caller claims
      └────────── the probe succeeds ────────┴───── the probe fails ────────┘ the probe (`allow_call`)

Every transition is one Lua script (``shared/lua/breaker_*.lua``) and every clock is Redis ``TIME``, so
processes on different hosts agree.  A claimed probe that never reports (its worker died) frees the slot
after ``probe_timeout``.  Routing reads the cheap :meth:`CircuitBreaker.open_deployments` (one round trip);
an ingress keeps a copy of it refreshed in the background (``ingress/open_set.py``) so requests pay nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis.asyncio as aredis
from redis.exceptions import RedisError

from shared import keys
from shared.errors import InvalidRequest, ServiceUnavailable, UpstreamError, UpstreamUnavailable
from shared.lua import LuaScript, ScriptCall
from shared.settings import BreakerSettings

log = logging.getLogger(__name__)

BreakerStatus = Literal["closed", "open", "half-open"]
Verdict = Literal["closed", "probe", "open", "probing"]

_RECORD_FAILURE = LuaScript.load("breaker_failure")
_RECORD_SUCCESS = LuaScript.load("breaker_success")
_ALLOW = LuaScript.load("breaker_allow")
_BLOCKED = LuaScript.load("breaker_blocked")
_RELEASE = LuaScript.load("breaker_release")


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class BreakerDecision:
    """The answer of :meth:`CircuitBreaker.allow_call`."""

    verdict: Verdict
    retry_after: float = 0.0  # seconds until this deployment may admit someone again (when refused)

    @property
    def allowed(self) -> bool:
        return self.verdict in ("closed", "probe")

    @property
    def is_probe(self) -> bool:
        return self.verdict == "probe"


@dataclass(frozen=True, slots=True)
class BreakerView:
    """One deployment's breaker, for operators."""

    deployment_id: str
    status: BreakerStatus
    failures: int  # failures within the current window
    opens_until: float | None  # unix time (Redis clock) the cooldown ends; None while closed
    probe_in_flight: bool
    trips: int  # times this breaker opened since Redis remembers it

    def to_dict(self) -> dict[str, object]:
        return {
            "deployment": self.deployment_id,
            "status": self.status,
            "failures": self.failures,
            "opens_until": self.opens_until,
            "probe_in_flight": self.probe_in_flight,
            "trips": self.trips,
        }


def outcome_of(error: BaseException | None) -> Literal["success", "failure", "none"]:
    """What a finished upstream call says about its deployment.

    ``failure``: the provider is unhealthy (unreachable, timed out, 429/5xx, broke the stream, rejected our
    credentials).  ``success``: it answered properly, including a 400 for the client's bad request.
    ``none``: the call proves nothing (cancelled because the client left, or our own bug).
    """
    if error is None or isinstance(error, InvalidRequest):
        return "success"
    if isinstance(error, (UpstreamUnavailable, UpstreamError)):
        return "failure"
    return "none"


class CircuitBreaker:
    """Every deployment's breaker, over one asyncio Redis client."""

    def __init__(self, redis: aredis.Redis, settings: BreakerSettings) -> None:
        self._redis = redis
        self._settings = settings

    @property
    def settings(self) -> BreakerSettings:
        return self._settings

    def allow_call(self, deployment_id: str) -> ScriptCall:
        """Whether a request may go to ``deployment_id`` now: the script call, to make among others (its
        reply goes to :func:`decision_of`).  In half-open, exactly one caller gets ``probe`` and must
        report its outcome with :meth:`record_call`."""
        return ScriptCall(
            _ALLOW,
            [keys.breaker_state(deployment_id), keys.BREAKER_BLOCKED],
            [deployment_id, _ms(self._settings.probe_timeout)],
        )

    def record_call(
        self, deployment_id: str, error: BaseException | None, *, probe: bool = False
    ) -> ScriptCall | None:
        """Report a finished upstream call (``error`` None: it succeeded) as :func:`outcome_of` says: the
        script call, to make among others; None when there is nothing to record.

        A failure (connect error, timeout, 429, 5xx) opens the breaker when the window holds
        ``failure_threshold``; a success closes a half-open breaker.  ``probe``: the call was admitted as
        the half-open probe, given back when the call proved nothing (cancelled), so the next caller
        probes at once."""
        outcome = outcome_of(error)
        if outcome == "success":
            return self._success_call(deployment_id)
        if outcome == "failure":
            return self._failure_call(deployment_id)
        return self._release_call(deployment_id) if probe else None

    def _success_call(self, deployment_id: str) -> ScriptCall:
        state = keys.breaker_state(deployment_id)
        return ScriptCall(
            _RECORD_SUCCESS,
            [state, keys.breaker_failures(deployment_id), keys.BREAKER_BLOCKED],
            [deployment_id],
        )

    def _failure_call(self, deployment_id: str) -> ScriptCall:
        s = self._settings
        return ScriptCall(
            _RECORD_FAILURE,
            [
                keys.breaker_state(deployment_id),
                keys.breaker_failures(deployment_id),
                keys.BREAKER_BLOCKED,
                keys.BREAKER_DEPLOYMENTS,
            ],
            [deployment_id, s.failure_threshold, _ms(s.window), _ms(s.cooldown)],
        )

    def _release_call(self, deployment_id: str) -> ScriptCall:
        return ScriptCall(
            _RELEASE, [keys.breaker_state(deployment_id), keys.BREAKER_BLOCKED], [deployment_id]
        )

    async def open_deployments(self) -> dict[str, float]:
        """Deployment id -> seconds until it may admit again, for every deployment routing must skip
        now (cooling down, or its one probe is in flight).  One round trip."""
        rows = await self._call(ScriptCall(_BLOCKED, [keys.BREAKER_BLOCKED], []))
        return {_text(rows[i]): int(rows[i + 1]) / 1000 for i in range(0, len(rows), 2)}

    async def views(self, deployment_ids: Iterable[str] = ()) -> list[BreakerView]:
        """Every known deployment's breaker (those that ever failed, plus ``deployment_ids``), sorted."""
        try:
            known = {_text(m) for m in await self._redis.smembers(keys.BREAKER_DEPLOYMENTS)}
            ids = sorted(known.union(deployment_ids))
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.time()
                for dep in ids:
                    pipe.hmget(keys.breaker_state(dep), "open_until", "probe_until", "trips")
                    pipe.zrange(keys.breaker_failures(dep), 0, -1, withscores=True)
                replies = await pipe.execute()
        except RedisError as exc:
            raise ServiceUnavailable("Circuit breaker state is unavailable.") from exc
        seconds, micros = replies[0]
        now_ms = seconds * 1000 + micros // 1000
        window_start = now_ms - _ms(self._settings.window)
        return [
            _view(dep, now_ms, window_start, state, failures)
            for dep, state, failures in zip(ids, replies[1::2], replies[2::2], strict=True)
        ]

    async def _call(self, call: ScriptCall) -> Any:
        try:
            return await call.run(self._redis)
        except RedisError as exc:
            raise ServiceUnavailable("Circuit breaker state is unavailable.") from exc


def decision_of(reply: Any) -> BreakerDecision:
    """The :class:`BreakerDecision` an ``allow`` script call answered."""
    return BreakerDecision(cast(Verdict, _text(reply[0])), int(reply[1]) / 1000)


def _view(
    dep: str,
    now_ms: int,
    window_start: int,
    state: list[bytes | None],
    failures: list[tuple[bytes, float]],
) -> BreakerView:
    open_until, probe_until, trips = (int(v) if v is not None else None for v in state)
    if open_until is None:
        status: BreakerStatus = "closed"
    else:
        status = "open" if now_ms < open_until else "half-open"
    return BreakerView(
        deployment_id=dep,
        status=status,
        failures=sum(1 for _, score in failures if score > window_start),
        opens_until=open_until / 1000 if open_until is not None else None,
        probe_in_flight=status == "half-open" and probe_until is not None and now_ms < probe_until,
        trips=trips or 0,
    )
