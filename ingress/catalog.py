"""``GET /v1/models`` and ``GET /v1/models/{id}``: the catalog as OpenAI Model objects.

Each object is OpenAI's ``{id, object: "model", created, owned_by}`` plus ``context_length`` and
``pricing`` (``input`` / ``output``, USD per million tokens).  Both need an API key, as at OpenAI, and
count against its account's rate limit.  The
catalog is immutable, so its JSON is serialized once per app.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ingress.admission import Admission
from ingress.context import ingress_context
from shared.errors import ModelNotFound
from shared.settings import ModelEntry


def model_object(entry: ModelEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "object": "model",
        "created": entry.created,
        "owned_by": entry.owned_by,
        "context_length": entry.context_length,
        "pricing": {"input": entry.input_price_per_m, "output": entry.output_price_per_m},
    }


class CatalogEndpoints:
    def __init__(self, models: Mapping[str, ModelEntry]) -> None:
        self._list_body = orjson.dumps({"object": "list", "data": [model_object(m) for m in models.values()]})
        self._model_bodies = {model_id: orjson.dumps(model_object(m)) for model_id, m in models.items()}

    async def list_models(self, request: Request) -> Response:
        rate_limit = await _authenticate(request)
        return Response(self._list_body, media_type="application/json", headers=rate_limit)

    async def get_model(self, request: Request) -> Response:
        rate_limit = await _authenticate(request)
        model_id: str = request.path_params["model_id"]
        body = self._model_bodies.get(model_id)
        if body is None:
            raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model", headers=rate_limit)
        return Response(body, media_type="application/json", headers=rate_limit)


async def _authenticate(request: Request) -> dict[str, str]:
    """Authenticate and count the request against its account's rate limit; its ``X-RateLimit-*``."""
    context = ingress_context(request.app)
    authorization = request.headers.get("authorization")
    record = await context.auth.authenticate(authorization)
    return await Admission(context, record, authorization).count()
