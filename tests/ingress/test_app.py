"""The app shell: routes, the error envelope on every failure, and the headers on every response."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from ingress.routing import ModelRouter
from tests.ingress.conftest import Ingress, IngressFactory
from tests.openai_spec import violations


def assert_error(
    response: httpx.Response, status: int, type_: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    """The response is the OpenAI error envelope with these values, valid against error.json."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert violations("error.json", "ErrorResponse", body) == []
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert (body["error"]["type"], body["error"]["code"], body["error"]["param"]) == (type_, code, param)
    assert body["error"]["message"]
    assert "x-request-id" in response.headers and "api-version" in response.headers
    return body


async def test_healthz_answers_with_the_common_headers(ingress: Ingress) -> None:
    """/healthz needs no key and carries X-Request-Id and API-Version like every response."""
    response = await ingress.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["api-version"] == "2026-06-01"
    uuid.UUID(response.headers["x-request-id"])


@pytest.mark.parametrize("path", ["/nope", "/v1/chat/completions/", "/v1/model"])
async def test_unknown_path_is_a_404_envelope(ingress: Ingress, path: str) -> None:
    """An unknown URL (trailing slashes included) is a 404 in the error format, not Starlette's text."""
    response = await ingress.client.get(path, headers=ingress.headers())
    body = assert_error(response, 404, "invalid_request", "not_found")
    assert path in body["error"]["message"]


async def test_wrong_method_is_a_405_envelope_with_allow(ingress: Ingress) -> None:
    """GET on the completions route is a 405 envelope that says which method is allowed."""
    response = await ingress.client.get("/v1/chat/completions", headers=ingress.headers())
    assert_error(response, 405, "invalid_request", "method_not_allowed")
    assert response.headers["allow"] == "POST"


async def test_sane_client_request_id_is_echoed(ingress: Ingress) -> None:
    """A client X-Request-Id made of safe characters comes back unchanged, on errors too."""
    response = await ingress.client.get("/nope", headers={"X-Request-Id": "req:abc-123.x_Y"})
    assert response.headers["x-request-id"] == "req:abc-123.x_Y"


@pytest.mark.parametrize("sent", ["has space", "x" * 129, "semi;colon", "é"])
async def test_insane_client_request_id_is_replaced(ingress: Ingress, sent: str) -> None:
    """An X-Request-Id with unsafe characters or over 128 chars is replaced by a fresh UUID4."""
    response = await ingress.client.get("/healthz", headers={b"X-Request-Id": sent.encode("utf-8")})
    assert response.headers["x-request-id"] != sent
    assert uuid.UUID(response.headers["x-request-id"]).version == 4


async def test_unexpected_exception_is_a_500_envelope(
    ingress: Ingress, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug inside a handler answers a 500 api_error envelope with the common headers, not a text page."""

    def broken(self: ModelRouter, *args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(ModelRouter, "route", broken)
    response = await ingress.chat(headers={"X-Request-Id": "trace-1"})
    assert_error(response, 500, "api_error", None)
    assert response.headers["x-request-id"] == "trace-1"
    assert "boom" not in response.text
    logged = [r for r in caplog.records if r.name == "ingress.middleware"]
    assert logged and logged[0].exc_info is not None and "boom" in str(logged[0].exc_info[1])


async def test_admin_api_is_mounted_behind_its_token(ingress_factory: IngressFactory) -> None:
    """The admin routes live in the ingress app, answer with the admin token and refuse API keys."""
    async with ingress_factory(admin_token="admin-token-for-tests-0123456789abcdef") as ingress:
        response = await ingress.client.get(
            "/admin/plans", headers={"Authorization": "Bearer admin-token-for-tests-0123456789abcdef"}
        )
        assert response.status_code == 200
        assert "api-version" in response.headers
        refused = await ingress.client.get("/admin/plans", headers=ingress.headers())
        assert refused.status_code == 401


async def test_admin_api_is_disabled_without_a_token(ingress: Ingress) -> None:
    """With no admin token configured the admin routes are a 404 envelope."""
    response = await ingress.client.get("/admin/plans")
    assert_error(response, 404, "invalid_request", "admin_disabled")
