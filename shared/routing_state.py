"""What routing reads to pick a deployment, and the strategies that read it.

Workers write, ingresses read, Redis holds it (every clock is Redis ``TIME``):

- **in-flight jobs** per deployment, counted per worker with a lease (:class:`InflightTracker`): a worker
  killed with ``-9`` stops renewing its lease and its jobs stop counting within ``worker_dead_after``;
- **queue depth** of each pool: ``LLEN`` of its rq queue;
- **time to first token** per deployment, an exponentially decayed average (:func:`ttft_call`) that is
  forgotten after ``latency_ttl`` without samples.

:func:`order_deployments` is pure: given a model, the deployments to skip (breaker open, queue full) and
these statistics, it returns the deployments to try, best first; the rest are the fallback order.

    priority     catalog order
    weighted     random by weight, then the rest by weight again (sampling without replacement)
    least-busy   fewest in-flight jobs plus queued jobs of the pool; ties keep catalog order
    latency      lowest decayed time to first token; deployments without samples first (so they get
                 measured); ties keep catalog order
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import RedisError

from shared import keys
from shared.errors import ServiceUnavailable
from shared.lua import LuaScript, ScriptCall
from shared.settings import Deployment, ModelEntry, RoutingStatsSettings

_INFLIGHT = LuaScript.load("routing_inflight")
_TTFT = LuaScript.load("routing_ttft")

STATS_STRATEGIES = frozenset({"least-busy", "latency"})
"""Strategies that need :func:`load_stats`; the others decide without reading Redis."""


def deployment_id(deployment: Deployment) -> str:
    """The name of a deployment in the breaker and the statistics: ``<provider>/<upstream model>``."""
    return f"{deployment.provider}/{deployment.upstream_model}"


def catalog_deployment_ids(models: Mapping[str, ModelEntry]) -> list[str]:
    """Every deployment id of the catalog, once each, sorted (e.g. for the operator's breaker view)."""
    return sorted({deployment_id(d) for model in models.values() for d in model.deployments})


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("Routing statistics are unavailable.")


@dataclass(frozen=True, slots=True)
class DeploymentStats:
    inflight: int = 0  # jobs running on the deployment, across live workers
    queue_depth: int = 0  # jobs waiting in the deployment's pool (shared by the pool's deployments)
    ttft: float | None = None  # decayed average time to first token, seconds; None = no recent sample

    @property
    def load(self) -> int:
        return self.inflight + self.queue_depth


# --- writing (workers) ----------------------------------------------------------------------------


class InflightTracker:
    """One worker process' running jobs per deployment, mirrored in Redis under a lease.

    Make :meth:`started_call` / :meth:`finished_call` around each job (the latter in a ``finally``), and
    :meth:`renew` on every heartbeat, with a lease longer than the heartbeat interval (typically
    ``worker_dead_after``).  Starts and finishes are increments, so their order on the wire does not
    matter; the local counts are the truth and :meth:`renew` re-asserts them, so a lost update heals on
    the next heartbeat (and a count nobody renews expires with its lease).
    """

    def __init__(self, redis: aredis.Redis, worker_name: str, lease: float) -> None:
        self._redis = redis
        self._worker = worker_name
        self._lease_ms = _ms(lease)
        self._counts: dict[str, int] = {}

    def started_call(self, dep_id: str) -> ScriptCall:
        """Count a job started now; the Redis write is the returned call, to make among others."""
        self._counts[dep_id] = self._counts.get(dep_id, 0) + 1
        return self._call(dep_id, "add", 1)

    def finished_call(self, dep_id: str) -> ScriptCall | None:
        """Count a job finished now; the returned call writes it (None: it never started here)."""
        left = self._counts.get(dep_id, 0) - 1
        if left < 0:
            return None  # never started here: nothing to take back
        if left:
            self._counts[dep_id] = left
        else:
            del self._counts[dep_id]
        return self._call(dep_id, "add", -1)

    async def renew(self) -> None:
        """Extend the lease of every deployment this worker has jobs on (one round trip)."""
        if not self._counts:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for dep_id, count in self._counts.items():
                    script_keys = [keys.inflight_counts(dep_id), keys.inflight_leases(dep_id)]
                    pipe.evalsha(_INFLIGHT.sha, 2, *script_keys, self._worker, "set", count, self._lease_ms)
                await pipe.execute()
        except RedisError:
            # NOSCRIPT after a Redis restart, or Redis away: write each one through the loader instead.
            for dep_id, count in list(self._counts.items()):
                await self._write(dep_id, "set", count)

    async def _write(self, dep_id: str, mode: str, amount: int) -> None:
        await self._run(self._call(dep_id, mode, amount))

    def _call(self, dep_id: str, mode: str, amount: int) -> ScriptCall:
        script_keys = [keys.inflight_counts(dep_id), keys.inflight_leases(dep_id)]
        return ScriptCall(_INFLIGHT, script_keys, [self._worker, mode, amount, self._lease_ms])

    async def _run(self, call: ScriptCall) -> None:
        try:
            await call.run(self._redis)
        except RedisError as exc:
            raise _unavailable() from exc


def ttft_call(dep_id: str, seconds: float, settings: RoutingStatsSettings) -> ScriptCall:
    """Fold one time-to-first-token sample into the deployment's decayed average: the script call, to
    make among others (its reply is the average, in milliseconds)."""
    args = [round(seconds * 1000, 3), settings.latency_alpha, _ms(settings.latency_ttl)]
    return ScriptCall(_TTFT, [keys.ttft_stats(dep_id)], args)


# --- reading (ingress) ----------------------------------------------------------------------------


async def load_stats(redis: aredis.Redis, deployments: Iterable[Deployment]) -> dict[str, DeploymentStats]:
    """Every statistic of ``deployments`` in one round trip (a read-only MULTI), by deployment id."""
    deps = list(deployments)
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.time()
            for dep in deps:
                dep_id = deployment_id(dep)
                pipe.hgetall(keys.inflight_counts(dep_id))
                pipe.zrange(keys.inflight_leases(dep_id), 0, -1, withscores=True)
                pipe.hget(keys.ttft_stats(dep_id), "avg_ms")
                pipe.llen(keys.rq_queue_key(dep.provider))
            replies = await pipe.execute()
    except RedisError as exc:
        raise _unavailable() from exc
    seconds, micros = replies[0]
    now_ms = seconds * 1000 + micros // 1000
    stats: dict[str, DeploymentStats] = {}
    for i, dep in enumerate(deps):
        counts, leases, ttft_ms, depth = replies[1 + 4 * i : 5 + 4 * i]
        stats[deployment_id(dep)] = DeploymentStats(
            inflight=_live_inflight(counts, leases, now_ms),
            queue_depth=int(depth),
            ttft=float(ttft_ms) / 1000 if ttft_ms is not None else None,
        )
    return stats


def _live_inflight(counts: Mapping[Any, Any], leases: Sequence[tuple[Any, float]], now_ms: int) -> int:
    live = {worker for worker, until in leases if until > now_ms}
    return sum(max(int(n), 0) for worker, n in counts.items() if worker in live)


# --- choosing (pure) ------------------------------------------------------------------------------


def order_deployments(
    model: ModelEntry,
    *,
    skip: Collection[str] = (),
    stats: Mapping[str, DeploymentStats] | None = None,
    rand: Callable[[], float] = random.random,
) -> list[Deployment]:
    """The deployments of ``model`` to try, best first, leaving out those whose id is in ``skip``.

    An empty list means every deployment is skipped: the caller answers 503 at once.  ``stats`` is
    needed by ``least-busy`` and ``latency`` (missing entries count as idle / unmeasured); ``rand``
    (uniform in [0, 1)) drives ``weighted``.
    """
    healthy = [d for d in model.deployments if deployment_id(d) not in skip]
    stats = stats or {}
    if model.strategy == "weighted":
        return _weighted_order(healthy, rand)
    if model.strategy == "least-busy":
        return sorted(healthy, key=lambda d: stats.get(deployment_id(d), DeploymentStats()).load)
    if model.strategy == "latency":
        return sorted(healthy, key=lambda d: _latency_key(stats.get(deployment_id(d))))
    return healthy


def soonest_retry(model: ModelEntry, skipped: Mapping[str, float], default: float = 1.0) -> float:
    """Seconds until the first of ``model``'s skipped deployments may admit again (``skipped`` maps
    deployment id -> seconds, like :meth:`ingress.open_set.OpenSetCache.snapshot`): the ``Retry-After``
    of the 503 when every deployment is skipped."""
    waits = [skipped[d] for d in map(deployment_id, model.deployments) if d in skipped]
    return min(waits) if waits else default


def _latency_key(stats: DeploymentStats | None) -> float:
    if stats is None or stats.ttft is None:
        return -1.0  # unmeasured: try it, so that it gets a measurement
    return stats.ttft


def _weighted_order(deployments: list[Deployment], rand: Callable[[], float]) -> list[Deployment]:
    pool = [d for d in deployments if d.weight > 0]
    ordered: list[Deployment] = []
    while pool:
        point = rand() * sum(d.weight for d in pool)
        for index, dep in enumerate(pool):
            point -= dep.weight
            if point < 0 or index == len(pool) - 1:
                ordered.append(pool.pop(index))
                break
    return ordered + [d for d in deployments if d.weight <= 0]


def apply_preferences(
    ordered: Sequence[Deployment], order: Sequence[str] | None, allow_fallbacks: bool = True
) -> list[Deployment]:
    """OpenRouter-style per-request preferences (``provider: {order, allow_fallbacks}``): the providers
    named in ``order`` first, in that order; then the others unless ``allow_fallbacks`` is false."""
    if not order:
        return list(ordered)
    rank = {name: i for i, name in enumerate(order)}
    preferred = sorted((d for d in ordered if d.provider in rank), key=lambda d: rank[d.provider])
    if not allow_fallbacks:
        return preferred
    return preferred + [d for d in ordered if d.provider not in rank]
