"""Model routing: a public model id to the deployments that may serve this request, best first.

:meth:`ModelRouter.route` orders the model's deployments with its strategy (:mod:`shared.routing_state`),
leaving out those whose breaker is open (the ingress' :class:`~ingress.open_set.OpenSetCache`, no I/O),
then applies the request's ``provider`` preferences.  Only ``least-busy`` and ``latency`` read Redis
(one round trip, :func:`~shared.routing_state.load_stats`).  When nothing is left the request ends at
once with 503 ``service_unavailable`` and a ``Retry-After`` of the soonest breaker to admit again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import redis.asyncio as aredis

from ingress.open_set import OpenSetCache
from ingress.provider_preferences import NO_PREFERENCES, ProviderPreferences, check_served
from shared.errors import ModelNotFound, ServiceUnavailable
from shared.routing_state import (
    STATS_STRATEGIES,
    DeploymentStats,
    apply_preferences,
    load_stats,
    order_deployments,
    soonest_retry,
)
from shared.settings import Deployment, ModelEntry

ALL_OPEN_MESSAGE = "All providers temporarily unavailable."


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """The deployments to try for one request, best first; the rest of the list is the fallback order."""

    entry: ModelEntry
    deployments: tuple[Deployment, ...]
    stats: Mapping[str, DeploymentStats] | None = None  # read for this request (least-busy, latency)


class ModelRouter:
    def __init__(
        self, models: Mapping[str, ModelEntry], *, redis: aredis.Redis, open_set: OpenSetCache
    ) -> None:
        self._models = models
        self._redis = redis
        self._open_set = open_set

    def entry(self, model_id: str) -> ModelEntry:
        """The catalog entry of ``model_id`` (404 ``model_not_found`` when there is none)."""
        entry = self._models.get(model_id)
        if entry is None:
            raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")
        return entry

    def blocked_deployments(self) -> set[str]:
        """The deployments whose breaker is open now (the process' copy, no I/O)."""
        return set(self._open_set.snapshot())

    async def route(self, model_id: str, preferences: ProviderPreferences = NO_PREFERENCES) -> RoutePlan:
        """The deployments to try for a request of ``model_id``; 503 at once when every one is open."""
        entry = self.entry(model_id)
        check_served(entry, preferences)
        skipped = self._open_set.snapshot()
        stats = (
            await load_stats(self._redis, entry.deployments) if entry.strategy in STATS_STRATEGIES else None
        )
        ordered = order_deployments(entry, skip=skipped, stats=stats)
        ordered = apply_preferences(ordered, preferences.order, preferences.allow_fallbacks)
        if not ordered:
            raise ServiceUnavailable(ALL_OPEN_MESSAGE, headers=retry_after(soonest_retry(entry, skipped)))
        return RoutePlan(entry, tuple(ordered), stats)


def retry_after(seconds: float) -> dict[str, str]:
    """A ``Retry-After`` header of at least one whole second."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


UNAVAILABLE_RETRY_AFTER = 1
"""Seconds of the ``Retry-After`` of a 503 that names no wait of its own (the worker serving the request
was lost, Redis could not be reached, the ingress is stopping): every 503 tells the client when to retry."""


def automated_decision(entry: ModelEntry, *, fallbacks: int = 0) -> str:
    """The ``X-Automated-Decision`` header of a completion (Quebec Law 25 transparency)::

        provider selected automatically by AIOrouter routing (strategy=<strategy>, model=<model id>)

    ``<strategy>`` is the catalog entry's routing strategy (``priority`` by default); after a fallback the
    parenthesis also says how many deployments failed first: ``..., fallbacks=1)``.
    """
    detail = f"strategy={entry.strategy}, model={entry.id}"
    if fallbacks:
        detail += f", fallbacks={fallbacks}"
    return f"provider selected automatically by AIOrouter routing ({detail})"
