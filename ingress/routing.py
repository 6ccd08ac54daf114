"""Model routing: a public model id to the catalog entry and the deployment that will serve it.

For now the first deployment wins (``priority`` order); strategies and fallback plug in behind
:meth:`ModelRouter.route`, the one entry point the ingress calls.
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.errors import ModelNotFound
from shared.settings import Deployment, ModelEntry


class ModelRouter:
    def __init__(self, models: Mapping[str, ModelEntry]) -> None:
        self._models = models

    def route(self, model_id: str) -> tuple[ModelEntry, Deployment]:
        """The catalog entry of ``model_id`` and the deployment chosen for this request."""
        entry = self._models.get(model_id)
        if entry is None:
            raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")
        return entry, entry.deployments[0]


def automated_decision(entry: ModelEntry) -> str:
    """The ``X-Automated-Decision`` header of a completion (Quebec Law 25 transparency), exactly::

        provider selected automatically by AIOrouter routing (strategy=<strategy>, model=<model id>)

    ``<strategy>`` is the catalog entry's routing strategy (``priority`` by default).
    """
    return (
        f"provider selected automatically by AIOrouter routing (strategy={entry.strategy}, model={entry.id})"
    )
