"""The admin API under ``/admin/...``: accounts, their API keys, credits and usage, for operators.

Every route needs ``Authorization: Bearer <settings.admin_token>`` (compared in constant time; never an
API key; at least 32 characters, or the ingress refuses to start).  Without a configured admin token
every admin route answers 404 ``admin_disabled``.  Errors use the shared envelope even in an app without
the ingress' exception handlers.  The Redis client is the ingress context's (``app.state.ingress.redis``)
or, in a bare app, ``app.state.redis``.  Creating a key obeys the account's caps (see
:func:`ingress.control.accounts.create_key_for_account`).

    GET    /admin/plans
    POST   /admin/accounts                           {"name", "plan", "id"}  -> 201, dashboard token once
    GET    /admin/accounts?offset=&limit=
    GET    /admin/accounts/{id}
    PATCH  /admin/accounts/{id}                      {"name", "plan", "status"}
    POST   /admin/accounts/{id}/dashboard-token      -> a new dashboard token, once
    POST   /admin/accounts/{id}/keys                 {"name"}  -> 201, the secret once
    GET    /admin/accounts/{id}/keys
    DELETE /admin/accounts/{id}/keys/{key_id}        (or POST .../keys/{key_id}/revoke)
    POST   /admin/accounts/{id}/credits              {"amount_usd" | "amount_micros", "reason"}
    GET    /admin/accounts/{id}/credits              balance and ledger
    GET    /admin/accounts/{id}/usage?start=&end=    per day and model (YYYY-MM-DD, UTC; default 30 days)
    GET    /admin/accounts/{id}/usage/records?limit=
    GET    /admin/usage/records?limit=               every account's latest records
    GET    /admin/pools                              per pool: queued jobs, batch lane, live workers
    GET    /admin/pools/stats                        per pool: queue, running, last minutes' figures, breakers
    GET    /admin/breakers                           every deployment's circuit breaker
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import redis.asyncio as aredis
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ingress import api_keys
from ingress.control import accounts
from ingress.control.pool_view import pool_stats_view
from ingress.control.query_params import date_query, int_query
from ingress.request_body import CONTROL_BODY_LIMIT, request_body
from ingress.route_table import route_table
from shared import credits, keys, usage
from shared.breaker import CircuitBreaker
from shared.errors import (
    AIORouterError,
    AuthenticationError,
    ConfigError,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
)
from shared.routing_state import catalog_deployment_ids
from shared.settings import Plan, Settings

Endpoint = Callable[[Request], Awaitable[Response]]
DEFAULT_REPORT_DAYS = 30
MAX_PAGE = 1000
MIN_ADMIN_TOKEN_LENGTH = 32


def check_admin_token(settings: Settings) -> None:
    """Raise :class:`~shared.errors.ConfigError` for an admin token too short to resist guessing."""
    token = settings.admin_token
    if token and len(token) < MIN_ADMIN_TOKEN_LENGTH:
        raise ConfigError(
            f"admin_token (AIOROUTER_ADMIN_TOKEN) has {len(token)} characters; use at least "
            f"{MIN_ADMIN_TOKEN_LENGTH} (`python -c 'import secrets; print(secrets.token_urlsafe(32))'`), "
            "or none to disable the admin API"
        )


def admin_routes(settings: Settings) -> list[BaseRoute]:
    """The admin routes, to mount in the ingress app; :class:`ConfigError` for a short admin token."""
    check_admin_token(settings)
    api = AdminApi(settings)
    table: list[tuple[str, Callable[[Request], Awaitable[Response]], str]] = [
        ("/admin/plans", api.list_plans, "GET"),
        ("/admin/accounts", api.create_account, "POST"),
        ("/admin/accounts", api.list_accounts, "GET"),
        ("/admin/accounts/{account_id}", api.get_account, "GET"),
        ("/admin/accounts/{account_id}", api.update_account, "PATCH"),
        ("/admin/accounts/{account_id}/dashboard-token", api.rotate_dashboard_token, "POST"),
        ("/admin/accounts/{account_id}/keys", api.create_key, "POST"),
        ("/admin/accounts/{account_id}/keys", api.list_keys, "GET"),
        ("/admin/accounts/{account_id}/keys/{key_id}", api.revoke_key, "DELETE"),
        ("/admin/accounts/{account_id}/keys/{key_id}/revoke", api.revoke_key, "POST"),
        ("/admin/accounts/{account_id}/credits", api.add_credit, "POST"),
        ("/admin/accounts/{account_id}/credits", api.get_credit, "GET"),
        ("/admin/accounts/{account_id}/usage", api.daily_usage, "GET"),
        ("/admin/accounts/{account_id}/usage/records", api.usage_records, "GET"),
        ("/admin/usage/records", api.usage_records, "GET"),
        ("/admin/pools", api.pools, "GET"),
        ("/admin/pools/stats", api.pool_stats, "GET"),
        ("/admin/breakers", api.breakers, "GET"),
    ]
    return [*route_table((path, api.guarded(endpoint), method) for path, endpoint, method in table)]


class AdminApi:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._token = settings.admin_token.encode()

    def guarded(self, endpoint: Endpoint) -> Endpoint:
        """``endpoint`` behind the admin token, with every error answered in the envelope."""

        async def guarded_endpoint(request: Request) -> Response:
            try:
                self._authorize(request)
                return await endpoint(request)
            except RedisError:
                return _error(ServiceUnavailable("The account store is unreachable; retry shortly."))
            except AIORouterError as exc:
                return _error(exc)

        return guarded_endpoint

    def _authorize(self, request: Request) -> None:
        if not self._token:
            raise NotFound("The admin API is disabled: no admin token is configured.", code="admin_disabled")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._token):
            raise AuthenticationError(
                "Missing or wrong admin token. Send 'Authorization: Bearer <admin token>'.",
                code="invalid_admin_token",
            )

    # --- accounts ------------------------------------------------------------------------------------

    async def list_plans(self, request: Request) -> Response:
        return _json({"object": "list", "data": [plan_json(p) for p in self.settings.plans.values()]})

    async def create_account(self, request: Request) -> Response:
        body = await _body(request, allowed={"name", "plan", "id"})
        account, token = await accounts.create_account(
            _redis(request),
            self.settings,
            name=_string(body, "name") or "",
            plan=_string(body, "plan"),
            account_id=_string(body, "id"),
        )
        balance = await credits.get_balance(_redis(request), account.id)
        return _json({**account_json(account, balance, self.settings), "dashboard_token": token}, status=201)

    async def list_accounts(self, request: Request) -> Response:
        redis = _redis(request)
        offset = int_query(request, "offset", default=0, low=0, high=10**9)
        limit = int_query(request, "limit", default=100, low=1, high=MAX_PAGE)
        page = await accounts.list_accounts(redis, offset=offset, limit=limit)
        balances = await credits.get_balances(redis, [a.id for a in page])
        data = [account_json(a, b, self.settings) for a, b in zip(page, balances, strict=True)]
        total = await accounts.count_accounts(redis)
        return _json({"object": "list", "data": data, "total": total, "offset": offset, "limit": limit})

    async def get_account(self, request: Request) -> Response:
        account = await accounts.require_account(_redis(request), _path(request, "account_id"))
        balance = await credits.get_balance(_redis(request), account.id)
        return _json(account_json(account, balance, self.settings))

    async def update_account(self, request: Request) -> Response:
        account_id = _path(request, "account_id")
        await accounts.require_account(_redis(request), account_id)
        body = await _body(request, allowed={"name", "plan", "status"})
        account = await accounts.update_account(
            _redis(request),
            self.settings,
            account_id,
            name=_string(body, "name"),
            plan=_string(body, "plan"),
            status=_string(body, "status"),
        )
        balance = await credits.get_balance(_redis(request), account.id)
        return _json(account_json(account, balance, self.settings))

    async def rotate_dashboard_token(self, request: Request) -> Response:
        account_id = _path(request, "account_id")
        token = await accounts.rotate_dashboard_token(_redis(request), account_id)
        return _json({"account_id": account_id, "dashboard_token": token})

    # --- keys ----------------------------------------------------------------------------------------

    async def create_key(self, request: Request) -> Response:
        account_id = _path(request, "account_id")
        await accounts.require_account(_redis(request), account_id)
        body = await _body(request, allowed={"name"}, required=False)
        secret, record = await accounts.create_key_for_account(
            _redis(request), self.settings, account_id, name=_string(body, "name") or ""
        )
        return _json({**record.to_json(), "secret": secret}, status=201)

    async def list_keys(self, request: Request) -> Response:
        account = await accounts.require_account(_redis(request), _path(request, "account_id"))
        records = await api_keys.list_keys(_redis(request), account.id)
        return _json({"object": "list", "data": [r.to_json() for r in records]})

    async def revoke_key(self, request: Request) -> Response:
        redis = _redis(request)
        account = await accounts.require_account(redis, _path(request, "account_id"))
        key_id = _path(request, "key_id")
        owned = {r.key_id: r for r in await api_keys.list_keys(redis, account.id)}
        if key_id not in owned:
            raise NotFound(f"Account {account.id!r} has no key {key_id!r}.", code="key_not_found")
        await api_keys.revoke_key(redis, key_id)
        records = {r.key_id: r for r in await api_keys.list_keys(redis, account.id)}
        return _json(records[key_id].to_json())

    # --- credits and usage ---------------------------------------------------------------------------

    async def add_credit(self, request: Request) -> Response:
        account_id = _path(request, "account_id")
        await accounts.require_account(_redis(request), account_id)
        body = await _body(
            request, allowed={"amount_usd", "amount_micros", "reason"}, numbers_as_written=True
        )
        if ("amount_usd" in body) == ("amount_micros" in body):
            raise InvalidRequest("Give exactly one of amount_usd and amount_micros.", param="amount_usd")
        if "amount_usd" in body:
            amount = credits.parse_usd(body["amount_usd"])
        else:
            amount = credits.check_positive(body["amount_micros"])
        reason = _string(body, "reason") or ""
        balance, entry = await credits.add_credit(
            _redis(request),
            account_id,
            amount,
            reason=accounts.check_name(reason, param="reason"),
            actor="admin",
        )
        return _json({"credit": balance.to_json(), "ledger_entry": entry.to_json()})

    async def get_credit(self, request: Request) -> Response:
        account = await accounts.require_account(_redis(request), _path(request, "account_id"))
        limit = int_query(request, "limit", default=100, low=1, high=MAX_PAGE)
        balance = await credits.get_balance(_redis(request), account.id)
        entries = await credits.ledger(_redis(request), account.id, count=limit)
        return _json({"credit": balance.to_json(), "ledger": [e.to_json() for e in entries]})

    async def daily_usage(self, request: Request) -> Response:
        account = await accounts.require_account(_redis(request), _path(request, "account_id"))
        end = date_query(request, "end") or datetime.now(UTC).date()
        start = date_query(request, "start") or max(
            usage.FIRST_DAY, end - timedelta(days=DEFAULT_REPORT_DAYS - 1)
        )
        try:
            usage.days_between(start, end)
        except ValueError as exc:
            raise InvalidRequest(f"Bad report range: {exc}.", param="start") from exc
        rows = await usage.daily_usage(_redis(request), account.id, start, end)
        return _json(
            {
                "account_id": account.id,
                "start": start.isoformat(),
                "end": end.isoformat(),
                "data": [row.to_json() for row in rows],
                "totals_by_model": [row.to_json() | {"day": None} for row in usage.totals_by_model(rows)],
            }
        )

    async def usage_records(self, request: Request) -> Response:
        account_id = request.path_params.get("account_id")
        if account_id is not None:
            await accounts.require_account(_redis(request), account_id)
        limit = int_query(request, "limit", default=100, low=1, high=MAX_PAGE)
        records = await usage.recent_usage(_redis(request), account_id, count=limit)
        return _json({"object": "list", "data": [r.to_json() for r in records]})

    # --- operations ----------------------------------------------------------------------------------

    async def breakers(self, request: Request) -> Response:
        """Every deployment's circuit breaker: the catalog's, plus any other that ever failed."""
        breaker = CircuitBreaker(_redis(request), self.settings.breaker)
        views = await breaker.views(catalog_deployment_ids(self.settings.models))
        return _json({"object": "list", "data": [view.to_dict() for view in views]})

    async def pool_stats(self, request: Request) -> Response:
        """Per pool: queue depth, running jobs, live workers, the last minutes' throughput, error rate and
        TTFT percentiles, and its deployments' breakers (:mod:`ingress.control.pool_view`)."""
        return _json(await pool_stats_view(_redis(request), self.settings))

    async def pools(self, request: Request) -> Response:
        """Every configured or seen pool: its queue depth, its batch lane (lines queued and running) and
        the workers whose heartbeat is recent."""
        redis = _redis(request)
        seen = {_text(p) for p in await redis.smembers(keys.POOLS_SET)}
        names = sorted(seen | set(self.settings.providers))
        since = time.time() - self.settings.worker_dead_after
        async with redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.llen(keys.rq_queue_key(name))
                pipe.zrangebyscore(keys.pool_workers(name), since, "+inf", withscores=True)
                pipe.llen(keys.rq_queue_key(keys.batch_lane(name)))
                pipe.zcard(keys.rq_started_registry(keys.batch_lane(name)))
            replies = await pipe.execute()
        data = [
            {
                "pool": name,
                "configured": name in self.settings.providers,
                "queued": int(queued),
                "workers": [{"name": _text(worker), "last_heartbeat": beat} for worker, beat in workers],
                "batch_lane": {"queued": int(lane_queued), "running": int(lane_running)},
            }
            for name, queued, workers, lane_queued, lane_running in zip(
                names, replies[::4], replies[1::4], replies[2::4], replies[3::4], strict=True
            )
        ]
        return _json({"object": "list", "data": data})


# --- request parsing ---------------------------------------------------------------------------------


def _redis(request: Request) -> aredis.Redis:
    state = request.app.state
    context = getattr(state, "ingress", None)
    client: aredis.Redis = context.redis if context is not None else state.redis
    return client


def _path(request: Request, name: str) -> str:
    return str(request.path_params[name])


async def _body(
    request: Request, *, allowed: set[str], required: bool = True, numbers_as_written: bool = False
) -> dict[str, Any]:
    """The request's JSON object, with only ``allowed`` fields.  With ``numbers_as_written`` a JSON number
    with a fraction or an exponent is the text the caller wrote (for an amount: ``1e3`` or 17 decimals
    are refused as written, not read as the float they round to)."""
    raw = await request_body(request, CONTROL_BODY_LIMIT)
    if not raw.strip() and not required:
        return {}
    try:
        body = _exact_json(raw) if numbers_as_written else orjson.loads(raw)
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise InvalidRequest("The request body is not valid JSON.") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidRequest(
            f"Unknown field {unknown[0]!r}; expected: {', '.join(sorted(allowed))}.", param=unknown[0]
        )
    return body


def _exact_json(raw: bytes) -> Any:
    """JSON with each number that has a fraction or an exponent as its text; what orjson refuses (text that
    is not UTF-8, a lone surrogate, NaN) refused as on every other route."""
    orjson.loads(raw)
    return json.loads(raw.decode(), parse_float=str, parse_constant=_no_constant)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _string(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"{name!r} must be a string.", param=name)
    return value


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "name": plan.name,
        "requests_per_minute": plan.requests_per_minute,
        "tokens_per_minute": plan.tokens_per_minute or None,
    }


def account_json(account: accounts.Account, balance: credits.Balance, settings: Settings) -> dict[str, Any]:
    plan = settings.plans.get(account.plan)
    return {**account.to_json(), "credit": balance.to_json(), "rate_limit": plan_json(plan) if plan else None}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _json(content: Any, *, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def _error(error: AIORouterError) -> Response:
    return Response(
        error.envelope_bytes(), status_code=error.status, headers=error.headers, media_type="application/json"
    )
