"""The app shell: routes, the error envelope on every failure, and the headers on every response."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ingress.route_table import route_table
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


def _served_methods(ingress: Ingress) -> dict[str, set[str]]:
    """Every route path of the app and the methods served there, across all its routes."""
    served: dict[str, set[str]] = {}
    for route in ingress.app.routes:
        if isinstance(route, Route) and route.methods:
            served.setdefault(route.path, set()).update(route.methods)
    return served


async def test_a_405_allows_every_method_its_path_serves(ingress: Ingress) -> None:
    """For every path of the app (public, Files and Batches, admin, Dashboard), a method it does not serve
    is a 405 whose Allow header names every method the path serves, whichever route serves each."""
    served = _served_methods(ingress)
    assert {
        "/v1/files",
        "/v1/files/{file_id}",
        "/v1/batches",
        "/admin/accounts",
        "/dashboard/api/keys",
    } <= set(served)
    for path, methods in served.items():
        unserved = next(m for m in ("PUT", "PATCH", "DELETE", "POST", "GET") if m not in methods)
        url = re.sub(r"\{[^}]*\}", "x", path)
        response = await ingress.client.request(unserved, url, headers=ingress.headers())
        assert response.status_code == 405, (unserved, path, response.text)
        assert set(response.headers["allow"].split(", ")) == methods, (path, response.headers["allow"])


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


def test_a_method_routed_twice_on_one_path_is_refused() -> None:
    """A route table naming one method of one path twice is a programming error, found at start-up."""

    async def endpoint(request: Request) -> Response:
        return Response()

    with pytest.raises(ValueError, match="GET /x is routed twice"):
        route_table([("/x", endpoint, "GET"), ("/y", endpoint, "GET"), ("/x", endpoint, "GET")])
