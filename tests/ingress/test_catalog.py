"""/v1/models and /v1/models/{id}: OpenAI Model objects (valid against models.json) plus pricing."""

from __future__ import annotations

from tests.ingress.conftest import Ingress
from tests.ingress.test_app import assert_error
from tests.openai_spec import violations


async def test_list_models_is_an_openai_model_list(ingress: Ingress) -> None:
    """The list holds every catalog model as a valid Model, with context_length and pricing."""
    response = await ingress.client.get("/v1/models", headers=ingress.headers())
    assert response.status_code == 200
    listing = response.json()
    assert violations("models.json", "ListModelsResponse", listing) == []
    assert [m["id"] for m in listing["data"]] == list(ingress.settings.models)
    echo = listing["data"][0]
    assert echo["object"] == "model" and echo["owned_by"] == "aiorouter"
    assert echo["context_length"] == 131_072
    assert echo["pricing"] == {"input": 0.10, "output": 0.20}


async def test_get_model_with_a_slash_in_its_id(ingress: Ingress) -> None:
    """A model id containing '/' is found by GET /v1/models/{id}."""
    response = await ingress.client.get("/v1/models/aiorouter/lorem", headers=ingress.headers())
    assert response.status_code == 200
    model = response.json()
    assert violations("models.json", "Model", model) == []
    assert model["id"] == "aiorouter/lorem"


async def test_get_unknown_model_is_404(ingress: Ingress) -> None:
    """An unknown model id is a 404 model_not_found envelope."""
    response = await ingress.client.get("/v1/models/aiorouter/nope", headers=ingress.headers())
    assert_error(response, 404, "invalid_request", "model_not_found", "model")


async def test_models_need_a_key(ingress: Ingress) -> None:
    """Listing and getting models without a key is a 401, as at OpenAI."""
    for path in ("/v1/models", "/v1/models/aiorouter/echo"):
        assert_error(await ingress.client.get(path), 401, "authentication_error", "invalid_api_key")
