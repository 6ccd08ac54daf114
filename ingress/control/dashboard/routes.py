"""``/dashboard``: the page, its static files, and the API an account's dashboard calls.

An account signs in with its dashboard token (``dt-...``, see :mod:`ingress.control.accounts`); the
page sends it as ``Authorization: Bearer <token>`` to the account-scoped routes below, which only ever
see that account.  An operator signs in with the admin token instead, and the page calls the admin API
(:mod:`ingress.control.admin`): each pool's live figures, every account, and the plan, credit and
status changes the operator confirms.

    GET    /dashboard                       the page
    GET    /dashboard/static/{file}         its script and style sheet
    GET    /dashboard/api/account           the account, its plan's limits and its credit
    GET    /dashboard/api/keys              its API keys (never their secrets)
    POST   /dashboard/api/keys              {"name"} -> 201, the secret shown once
    DELETE /dashboard/api/keys/{key_id}     revoke one of its keys
    GET    /dashboard/api/usage?days=       per day and model, the last ``days`` UTC days (default 14)
    GET    /dashboard/api/batches           its latest batches (status, counts, result files)
    GET    /dashboard/api/files/{id}/content  one of its files, as a download

Every response carries :data:`SECURITY_HEADERS` (a strict Content-Security-Policy: the page has no inline
script or style).  Key creation obeys the account's caps (see
:func:`ingress.control.accounts.create_key_for_account`), and a suspended account cannot create keys.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aredis
from redis.exceptions import RedisError
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingress import api_keys
from ingress.batches import dashboard_api
from ingress.context import ingress_context
from ingress.control import accounts
from ingress.control.admin import account_json
from ingress.control.query_params import int_query
from ingress.request_body import CONTROL_BODY_LIMIT, request_body
from ingress.route_table import route_table
from shared import credits, usage
from shared.errors import AIORouterError, AuthenticationError, InvalidRequest, NotFound, ServiceUnavailable

AccountEndpoint = Callable[[Request, accounts.Account], Awaitable[Response]]
DEFAULT_DAYS = 14
MAX_DAYS = 90

SECURITY_HEADERS: Mapping[str, str] = {
    # Scripts, styles and calls only from this origin, no inline code, never inside a frame, no plugins.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""Sent with every Dashboard response: the page, its static files and its API."""


def dashboard_routes() -> list[BaseRoute]:
    files = resources.files(__package__)
    page = files.joinpath("index.html").read_bytes()

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers={"Cache-Control": "no-store", **SECURITY_HEADERS})

    table: list[tuple[str, AccountEndpoint, str]] = [
        ("/dashboard/api/account", _account, "GET"),
        ("/dashboard/api/keys", _list_keys, "GET"),
        ("/dashboard/api/keys", _create_key, "POST"),
        ("/dashboard/api/keys/{key_id}", _revoke_key, "DELETE"),
        ("/dashboard/api/usage", _usage, "GET"),
        ("/dashboard/api/batches", dashboard_api.account_batches, "GET"),
        ("/dashboard/api/files/{file_id}/content", dashboard_api.account_file_content, "GET"),
    ]
    return [
        Route("/dashboard", index, methods=["GET"]),
        Mount(
            "/dashboard/static",
            app=_with_security_headers(StaticFiles(directory=str(files.joinpath("static")))),
            name="dashboard",
        ),
        *route_table((path, _signed_in(endpoint), method) for path, endpoint, method in table),
    ]


def _signed_in(endpoint: AccountEndpoint) -> Callable[[Request], Awaitable[Response]]:
    """``endpoint`` for the account whose dashboard token the request carries; errors in the envelope."""

    async def signed_in_endpoint(request: Request) -> Response:
        try:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            account = None
            if scheme.lower() == "bearer":
                account = await accounts.account_for_dashboard_token(_redis(request), token.strip())
            if account is None:
                raise AuthenticationError(
                    "Missing or unknown dashboard token. Send 'Authorization: Bearer dt-...'.",
                    code="invalid_dashboard_token",
                )
            response = await endpoint(request, account)
            response.headers.update(SECURITY_HEADERS)  # on the responses of the routes built elsewhere too
            return response
        except RedisError:
            return _error(ServiceUnavailable("The account store is unreachable; retry shortly."))
        except AIORouterError as exc:
            return _error(exc)

    return signed_in_endpoint


async def _account(request: Request, account: accounts.Account) -> Response:
    redis = _redis(request)
    balance = await credits.get_balance(redis, account.id)
    return _json(account_json(account, balance, ingress_context(request.app).settings))


async def _list_keys(request: Request, account: accounts.Account) -> Response:
    records = await api_keys.list_keys(_redis(request), account.id)
    return _json({"object": "list", "data": [r.to_json() for r in records]})


async def _create_key(request: Request, account: accounts.Account) -> Response:
    try:
        body = orjson.loads(await request_body(request, CONTROL_BODY_LIMIT) or b"{}")
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest("The request body is not valid JSON.") from exc
    name = body.get("name", "") if isinstance(body, dict) else None
    if not isinstance(name, str):
        raise InvalidRequest("'name' must be a string.", param="name")
    secret, record = await accounts.create_key_for_account(
        _redis(request),
        ingress_context(request.app).settings,
        account.id,
        name=name.strip(),
        self_service=True,
    )
    return _json({**record.to_json(), "secret": secret}, status=201)


async def _revoke_key(request: Request, account: accounts.Account) -> Response:
    redis = _redis(request)
    key_id = str(request.path_params["key_id"])
    owned = {r.key_id for r in await api_keys.list_keys(redis, account.id)}
    if key_id not in owned:
        raise NotFound(f"This account has no key {key_id!r}.", code="key_not_found")
    await api_keys.revoke_key(redis, key_id)
    records = {r.key_id: r for r in await api_keys.list_keys(redis, account.id)}
    return _json(records[key_id].to_json())


async def _usage(request: Request, account: accounts.Account) -> Response:
    days = int_query(request, "days", default=DEFAULT_DAYS, low=1, high=MAX_DAYS)
    end = datetime.now(UTC).date()
    start = end - timedelta(days=days - 1)
    rows = await usage.daily_usage(_redis(request), account.id, start, end)
    return _json(
        {
            "start": start.isoformat(),
            "end": end.isoformat(),
            "data": [row.to_json() for row in rows],
            "totals_by_model": [row.to_json() | {"day": None} for row in usage.totals_by_model(rows)],
        }
    )


def _with_security_headers(app: ASGIApp) -> ASGIApp:
    async def app_with_headers(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await app(scope, receive, send_with_headers)

    return app_with_headers


def _redis(request: Request) -> aredis.Redis:
    return ingress_context(request.app).redis


def _json(content: Any, *, status: int = 200) -> Response:
    return Response(
        orjson.dumps(content),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", **SECURITY_HEADERS},
    )


def _error(error: AIORouterError) -> Response:
    return Response(
        error.envelope_bytes(),
        status_code=error.status,
        headers={**error.headers, "Cache-Control": "no-store", **SECURITY_HEADERS},
        media_type="application/json",
    )
