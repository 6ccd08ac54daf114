"""The admin API, in a bare Starlette app on the real Redis: every route's happy path and bad input."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import redis.asyncio as aredis
from starlette.applications import Starlette

from ingress import api_keys
from ingress.app import create_app
from ingress.control import accounts
from ingress.control.admin import admin_routes
from ingress.request_body import CONTROL_BODY_LIMIT
from shared import credits, keys, usage
from shared.errors import ConfigError
from shared.settings import Settings, settings_from_mapping
from tests.store_calls import record_usage

ADMIN_TOKEN = "admin-secret-for-tests-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def admin_app(settings: Settings, redis: aredis.Redis) -> Starlette:
    app = Starlette(routes=admin_routes(settings))
    app.state.redis = redis
    return app


def client_for(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin.test")


@pytest.fixture
async def admin(aredis_client: aredis.Redis) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_from_mapping({"admin_token": ADMIN_TOKEN}, env={})
    async with client_for(admin_app(settings, aredis_client)) as client:
        client.headers.update(AUTH)
        yield client


async def new_account(admin: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await admin.post("/admin/accounts", json=body)
    assert response.status_code == 201, response.text
    account: dict[str, Any] = response.json()
    return account


def assert_error(
    response: httpx.Response, status: int, code: str | None = None, param: str | None = None
) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param


# --- the guard ---------------------------------------------------------------------------------------


async def test_admin_is_disabled_without_a_configured_token(aredis_client: aredis.Redis) -> None:
    """With no admin token configured every admin route is a 404 admin_disabled, whatever is sent."""
    async with client_for(admin_app(Settings(), aredis_client)) as client:
        for method, path in (
            ("GET", "/admin/accounts"),
            ("POST", "/admin/accounts"),
            ("GET", "/admin/plans"),
        ):
            response = await client.request(method, path, headers={"Authorization": "Bearer "})
            assert_error(response, 404, "admin_disabled")
    assert await accounts.count_accounts(aredis_client) == 0


async def test_wrong_or_missing_admin_token_is_a_401(
    admin: httpx.AsyncClient, aredis_client: aredis.Redis
) -> None:
    """No token, a wrong token, another scheme, or an API key are all refused with invalid_admin_token."""
    account = await new_account(admin)
    secret, _ = await accounts.create_key_for_account(aredis_client, Settings(), account["id"])
    for header in ("", "Bearer wrong", f"Basic {ADMIN_TOKEN}", f"Bearer {secret}", f"Bearer {ADMIN_TOKEN}x"):
        response = await admin.get("/admin/accounts", headers={"Authorization": header})
        assert_error(response, 401, "invalid_admin_token")
    response = await admin.post("/admin/accounts", json={}, headers={"Authorization": "Bearer nope"})
    assert_error(response, 401)
    assert await accounts.count_accounts(aredis_client) == 1


async def test_unreachable_redis_is_a_503(aredis_client: aredis.Redis) -> None:
    """When Redis cannot be reached the admin API answers 503 in the error envelope."""
    settings = settings_from_mapping({"admin_token": ADMIN_TOKEN}, env={})
    dead = aredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    try:
        async with client_for(admin_app(settings, dead)) as client:
            assert_error(await client.get("/admin/accounts", headers=AUTH), 503, "service_unavailable")
    finally:
        await dead.aclose()


# --- accounts ----------------------------------------------------------------------------------------


async def test_account_lifecycle(admin: httpx.AsyncClient, aredis_client: aredis.Redis) -> None:
    """Create (dashboard token once), get, list with paging, change plan and status."""
    created = await new_account(admin, name="Ada", plan="developer")
    assert created["dashboard_token"].startswith("dt-")
    assert (created["name"], created["plan"], created["status"]) == ("Ada", "developer", "active")
    assert created["credit"]["balance_micros"] == 0
    assert created["rate_limit"] == {
        "name": "developer",
        "requests_per_minute": 60,
        "tokens_per_minute": None,
    }
    signed_in = await accounts.account_for_dashboard_token(aredis_client, created["dashboard_token"])
    assert signed_in is not None and signed_in.id == created["id"]

    fetched = (await admin.get(f"/admin/accounts/{created['id']}")).json()
    assert "dashboard_token" not in fetched and "dashboard_token_digest" not in fetched
    assert fetched == {k: v for k, v in created.items() if k != "dashboard_token"}

    second = await new_account(admin, id="team-b")
    assert (second["id"], second["plan"]) == ("team-b", "unverified")
    listing = (await admin.get("/admin/accounts", params={"limit": 1, "offset": 1})).json()
    assert (listing["total"], [a["id"] for a in listing["data"]]) == (2, ["team-b"])

    patched = await admin.patch(
        f"/admin/accounts/{created['id']}", json={"plan": "business", "status": "suspended"}
    )
    assert patched.status_code == 200
    assert (patched.json()["plan"], patched.json()["status"], patched.json()["name"]) == (
        "business",
        "suspended",
        "Ada",
    )
    assert patched.json()["rate_limit"]["requests_per_minute"] == 300


async def test_plans_are_listed(admin: httpx.AsyncClient) -> None:
    """The plans and their limits come from the settings."""
    plans = (await admin.get("/admin/plans")).json()["data"]
    assert [(p["name"], p["requests_per_minute"]) for p in plans] == [
        ("unverified", 10),
        ("developer", 60),
        ("business", 300),
    ]


async def test_dashboard_token_rotation(admin: httpx.AsyncClient, aredis_client: aredis.Redis) -> None:
    """A rotated dashboard token replaces the old one at once."""
    created = await new_account(admin)
    rotated = await admin.post(f"/admin/accounts/{created['id']}/dashboard-token")
    token = rotated.json()["dashboard_token"]
    assert token != created["dashboard_token"]
    assert await accounts.account_for_dashboard_token(aredis_client, created["dashboard_token"]) is None
    assert await accounts.account_for_dashboard_token(aredis_client, token) is not None
    assert_error(await admin.post("/admin/accounts/nobody/dashboard-token"), 404, "account_not_found")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"plan": "platinum"}, "plan"),
        ({"plan": 3}, "plan"),
        ({"name": ["x"]}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"id": "has spaces"}, "id"),
        ({"id": 12}, "id"),
        ({"nmae": "typo"}, "nmae"),
    ],
)
async def test_bad_account_creation_is_a_400(
    admin: httpx.AsyncClient, aredis_client: aredis.Redis, body: dict[str, Any], param: str
) -> None:
    """Unknown plans, wrong types, bad ids, long names and unknown fields are refused, creating nothing."""
    assert_error(await admin.post("/admin/accounts", json=body), 400, param=param)
    assert await accounts.count_accounts(aredis_client) == 0


async def test_an_oversized_body_is_a_413(admin: httpx.AsyncClient) -> None:
    """A body past the control plane's limit is refused before it is held whole."""
    raw = b'{"name": "' + b"x" * CONTROL_BODY_LIMIT + b'"}'
    assert_error(await admin.post("/admin/accounts", content=raw), 413)


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'"text"', b"null"])
async def test_malformed_bodies_are_a_400(admin: httpx.AsyncClient, raw: bytes) -> None:
    """A body that is not a JSON object is refused on every route that takes one."""
    account = await new_account(admin)
    assert_error(await admin.post("/admin/accounts", content=raw), 400)
    assert_error(await admin.patch(f"/admin/accounts/{account['id']}", content=raw), 400)
    assert_error(await admin.post(f"/admin/accounts/{account['id']}/credits", content=raw), 400)


async def test_taken_account_id_is_refused(admin: httpx.AsyncClient) -> None:
    """Creating an account under an id in use is a 400 account_exists and changes nothing."""
    await new_account(admin, id="taken", name="first")
    assert_error(
        await admin.post("/admin/accounts", json={"id": "taken", "name": "second"}), 400, "account_exists"
    )
    assert (await admin.get("/admin/accounts/taken")).json()["name"] == "first"


@pytest.mark.parametrize(
    ("body", "param"), [({"status": "deleted"}, "status"), ({"plan": None, "status": 1}, "status")]
)
async def test_bad_account_update_is_a_400(
    admin: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    """Unknown statuses and wrong types are refused and the account is unchanged."""
    account = await new_account(admin)
    assert_error(await admin.patch(f"/admin/accounts/{account['id']}", json=body), 400, param=param)
    assert (await admin.get(f"/admin/accounts/{account['id']}")).json()["status"] == "active"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/admin/accounts/nobody", None),
        ("PATCH", "/admin/accounts/nobody", {"plan": "business"}),
        ("POST", "/admin/accounts/nobody/keys", {"name": "k"}),
        ("GET", "/admin/accounts/nobody/keys", None),
        ("DELETE", "/admin/accounts/nobody/keys/key_1", None),
        ("POST", "/admin/accounts/nobody/keys/key_1/revoke", None),
        ("POST", "/admin/accounts/nobody/credits", {"amount_usd": 5}),
        ("GET", "/admin/accounts/nobody/credits", None),
        ("GET", "/admin/accounts/nobody/usage", None),
        ("GET", "/admin/accounts/nobody/usage/records", None),
    ],
)
async def test_unknown_account_is_a_404_everywhere(
    admin: httpx.AsyncClient, aredis_client: aredis.Redis, method: str, path: str, body: Any
) -> None:
    """Every per-account route answers 404 account_not_found for an unknown account and writes nothing."""
    assert_error(await admin.request(method, path, json=body), 404, "account_not_found")
    assert await aredis_client.dbsize() == 0


# --- keys --------------------------------------------------------------------------------------------


async def test_key_lifecycle(admin: httpx.AsyncClient, aredis_client: aredis.Redis) -> None:
    """A key is created with its secret shown once, listed without it, and revoked by DELETE or POST."""
    account = await new_account(admin, plan="developer")
    base = f"/admin/accounts/{account['id']}/keys"
    created = await admin.post(base, json={"name": "ci"})
    assert created.status_code == 201
    key = created.json()
    assert key["secret"].startswith("ak-")
    assert (key["name"], key["plan"], key["account_id"], key["revoked"]) == (
        "ci",
        "developer",
        account["id"],
        False,
    )
    record = await api_keys.lookup(aredis_client, api_keys.digest(key["secret"]))
    assert record is not None and record.key_id == key["id"]

    unnamed = await admin.post(base)  # no body at all: a key without a name
    assert unnamed.status_code == 201 and unnamed.json()["name"] == ""
    listed = (await admin.get(base)).json()["data"]
    assert [k["id"] for k in listed] == [key["id"], unnamed.json()["id"]]
    assert all("secret" not in k for k in listed)

    revoked = await admin.delete(f"{base}/{key['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    revoked_by_post = await admin.post(f"{base}/{unnamed.json()['id']}/revoke")
    assert revoked_by_post.json()["revoked"] is True
    assert all(k.revoked for k in await api_keys.list_keys(aredis_client, account["id"]))


async def test_key_of_another_account_cannot_be_revoked_through_this_one(
    admin: httpx.AsyncClient, aredis_client: aredis.Redis
) -> None:
    """Revoking a key id that is not this account's (or does not exist) is a 404 and revokes nothing."""
    owner, other = await new_account(admin), await new_account(admin)
    key = (await admin.post(f"/admin/accounts/{owner['id']}/keys", json={})).json()
    assert_error(await admin.delete(f"/admin/accounts/{other['id']}/keys/{key['id']}"), 404, "key_not_found")
    assert_error(await admin.delete(f"/admin/accounts/{owner['id']}/keys/key_missing"), 404, "key_not_found")
    assert not any(k.revoked for k in await api_keys.list_keys(aredis_client, owner["id"]))


async def test_bad_key_creation_is_a_400(admin: httpx.AsyncClient, aredis_client: aredis.Redis) -> None:
    """A non-string name or an unknown field creates no key."""
    account = await new_account(admin)
    base = f"/admin/accounts/{account['id']}/keys"
    assert_error(await admin.post(base, json={"name": 5}), 400, param="name")
    assert_error(await admin.post(base, json={"plan": "business"}), 400, param="plan")
    assert_error(await admin.post(base, content=b"{oops"), 400)
    assert await api_keys.list_keys(aredis_client, account["id"]) == []


async def test_key_caps_hold_for_the_admin_api(aredis_client: aredis.Redis) -> None:
    """The operator's key creation obeys the same caps: 400 too_many_keys, then 429 with Retry-After; an
    operator may still create a key on a suspended account."""
    settings = settings_from_mapping(
        {"admin_token": ADMIN_TOKEN, "max_keys_per_account": 1, "key_creations_per_hour": 2}, env={}
    )
    async with client_for(admin_app(settings, aredis_client)) as admin:
        admin.headers.update(AUTH)
        account = await new_account(admin)
        await admin.patch(f"/admin/accounts/{account['id']}", json={"status": "suspended"})
        base = f"/admin/accounts/{account['id']}/keys"
        first = await admin.post(base, json={"name": "one"})
        assert first.status_code == 201, first.text
        assert_error(await admin.post(base, json={}), 400, "too_many_keys")
        await admin.delete(f"{base}/{first.json()['id']}")
        second = await admin.post(base, json={})
        await admin.delete(f"{base}/{second.json()['id']}")
        fast = await admin.post(base, json={})
        assert_error(fast, 429, "key_creation_rate_limited")
        assert int(fast.headers["retry-after"]) >= 1


def test_short_admin_token_refuses_to_build_the_app() -> None:
    """An admin token under 32 characters stops start-up with a ConfigError naming the rule; none is fine."""
    with pytest.raises(ConfigError) as refused:
        create_app(settings_from_mapping({"admin_token": "x" * 31}, env={}))
    assert "at least 32" in refused.value.message and "\n" not in refused.value.message
    create_app(settings_from_mapping({"admin_token": "x" * 32}, env={}))
    create_app(settings_from_mapping({}, env={}))


# --- credits and usage -------------------------------------------------------------------------------


async def test_credit_is_added_with_a_ledger_entry(admin: httpx.AsyncClient) -> None:
    """USD and micro-USD grants raise the balance exactly, each with its ledger entry, newest first."""
    account = await new_account(admin)
    base = f"/admin/accounts/{account['id']}/credits"
    first = await admin.post(base, json={"amount_usd": "12.50", "reason": "welcome"})
    assert first.status_code == 200
    assert first.json()["credit"]["balance_micros"] == 12_500_000
    assert first.json()["ledger_entry"]["actor"] == "admin"
    second = await admin.post(base, json={"amount_micros": 250})
    assert second.json()["credit"]["balance_usd"] == "12.500250"
    state = (await admin.get(base)).json()
    assert state["credit"]["available_micros"] == 12_500_250
    assert [(e["amount_micros"], e["balance_micros"], e["reason"]) for e in state["ledger"]] == [
        (250, 12_500_250, ""),
        (12_500_000, 12_500_000, "welcome"),
    ]
    assert (await admin.get(f"/admin/accounts/{account['id']}")).json()["credit"][
        "balance_micros"
    ] == 12_500_250


@pytest.mark.parametrize(
    "body",
    [
        {"amount_usd": -5},
        {"amount_usd": 0},
        {"amount_usd": "ten"},
        {"amount_usd": None},
        {"amount_usd": True},
        {"amount_usd": [1]},
        {"amount_usd": "0.0000001"},
        {"amount_usd": "1e999999"},
        {"amount_usd": "1e2"},
        {"amount_usd": "1_000"},
        {"amount_usd": "\u0661\u0662"},
        {"amount_usd": "NaN"},
        {"amount_usd": "Infinity"},
        {"amount_usd": "9" * 40},
        {"amount_usd": 1e300},
        {"amount_usd": 10**30},
        {"amount_micros": -1},
        {"amount_micros": 0},
        {"amount_micros": 1.5},
        {"amount_micros": "100"},
        {"amount_usd": 1, "amount_micros": 1},
        {},
        {"reason": "no amount"},
        {"amount_usd": 1, "reason": 7},
        {"amount_usd": 1, "reason": "r" * 201},
        {"amount_usd": 1, "memo": "typo"},
    ],
)
async def test_bad_credit_is_a_400_and_adds_nothing(admin: httpx.AsyncClient, body: dict[str, Any]) -> None:
    """Negative, zero, non-numeric, ambiguous or missing amounts are refused with no ledger entry."""
    account = await new_account(admin)
    base = f"/admin/accounts/{account['id']}/credits"
    assert_error(await admin.post(base, json=body), 400)
    state = (await admin.get(base)).json()
    assert (state["credit"]["balance_micros"], state["ledger"]) == (0, [])


@pytest.mark.parametrize(
    "raw",
    [
        b'{"amount_usd": 1e3}',
        b'{"amount_usd": 1E2}',
        b'{"amount_usd": 0.30000000000000001}',
        b'{"amount_usd": NaN}',
        b'{"amount_usd": 1, "reason": "\\ud800"}',  # a lone surrogate: no text Redis can store
        '{"amount_usd": 1}'.encode("utf-16"),  # JSON is UTF-8 on every route
    ],
)
async def test_an_amount_is_read_as_written(admin: httpx.AsyncClient, raw: bytes) -> None:
    """A JSON number in exponent form, or with more decimals than a micro-USD, is refused as the text it
    is, not granted as the float it rounds to (NaN is no JSON at all)."""
    account = await new_account(admin)
    base = f"/admin/accounts/{account['id']}/credits"
    headers = {"content-type": "application/json"}
    assert_error(await admin.post(base, content=raw, headers=headers), 400)
    assert (await admin.get(base)).json()["credit"]["balance_micros"] == 0
    plain = await admin.post(base, content=b'{"amount_usd": 12.5}', headers=headers)
    assert plain.json()["credit"]["balance_micros"] == 12_500_000


async def test_a_balance_stops_at_its_limit(admin: httpx.AsyncClient) -> None:
    """Grants up to the balance limit are taken; the one past it is a 400 that writes nothing, where Redis'
    integers would otherwise overflow into a misleading 503."""
    account = await new_account(admin)
    base = f"/admin/accounts/{account['id']}/credits"
    for _ in range(credits.MAX_BALANCE // credits.MAX_AMOUNT):
        assert (await admin.post(base, json={"amount_micros": credits.MAX_AMOUNT})).status_code == 200
    refused = await admin.post(base, json={"amount_micros": 1})
    assert_error(refused, 400)
    assert refused.json()["error"]["code"] == "balance_limit_exceeded"
    state = (await admin.get(base)).json()
    assert state["credit"]["balance_micros"] == credits.MAX_BALANCE
    assert len(state["ledger"]) == credits.MAX_BALANCE // credits.MAX_AMOUNT


async def test_usage_reports_by_day_and_model(admin: httpx.AsyncClient, aredis_client: aredis.Redis) -> None:
    """Recorded usage shows per day and model, as totals per model, and as recent records."""
    account = await new_account(admin)
    today = datetime.now(UTC)
    for n, model in enumerate(("m/a", "m/a", "m/b")):
        await record_usage(
            aredis_client,
            usage.UsageRecord(
                request_id=f"req_{n}",
                account_id=account["id"],
                key_id="key_x",
                model=model,
                provider="simulated",
                prompt_tokens=10,
                completion_tokens=5,
                cost_micros=credits.price_micros(10, 0.1),
                latency_ms=50,
                status="ok",
                at=today.timestamp(),
            ),
        )
    report = (await admin.get(f"/admin/accounts/{account['id']}/usage")).json()
    assert report["end"] == today.date().isoformat()
    assert [(r["day"], r["model"], r["requests"], r["prompt_tokens"]) for r in report["data"]] == [
        (today.date().isoformat(), "m/a", 2, 20),
        (today.date().isoformat(), "m/b", 1, 10),
    ]
    assert [(t["model"], t["cost_micros"]) for t in report["totals_by_model"]] == [("m/a", 2), ("m/b", 1)]
    empty = await admin.get(
        f"/admin/accounts/{account['id']}/usage", params={"start": "2020-01-01", "end": "2020-01-31"}
    )
    assert empty.json()["data"] == []
    earliest = await admin.get(f"/admin/accounts/{account['id']}/usage", params={"end": "1970-01-05"})
    assert (earliest.json()["start"], earliest.json()["end"]) == ("1970-01-01", "1970-01-05")  # not 1969

    records = (await admin.get(f"/admin/accounts/{account['id']}/usage/records", params={"limit": 2})).json()
    assert [r["request_id"] for r in records["data"]] == ["req_2", "req_1"]
    everyone = (await admin.get("/admin/usage/records")).json()
    assert len(everyone["data"]) == 3


@pytest.mark.parametrize(
    "params",
    [
        {"start": "yesterday"},
        {"end": "2026-13-01"},
        {"start": "2026-02-01", "end": "2026-01-01"},
        {"start": "2024-01-01", "end": "2026-01-01"},
        {"end": "0001-01-01"},
        {"start": "0001-01-01", "end": "0001-01-02"},
        {"start": "9999-12-31"},
        {"end": "20260101"},
        {"end": "2026-W01-1"},
        {"end": "\u0662\u0660\u0662\u0666-01-01"},
    ],
)
async def test_bad_usage_ranges_are_a_400(admin: httpx.AsyncClient, params: dict[str, str]) -> None:
    """Dates that do not parse (or not as YYYY-MM-DD in ASCII), lie before 1970, run backwards or span
    more than a year are refused in the envelope, never a 500 from date arithmetic."""
    account = await new_account(admin)
    assert_error(await admin.get(f"/admin/accounts/{account['id']}/usage", params=params), 400)


async def test_usage_at_the_edges_of_the_calendar_answers(admin: httpx.AsyncClient) -> None:
    """The first and the last day a report may name give an empty report, not an overflow."""
    account = await new_account(admin)
    url = f"/admin/accounts/{account['id']}/usage"
    for params in (
        {"end": "1970-01-01"},
        {"end": "9999-12-31"},
        {"start": "9999-12-31", "end": "9999-12-31"},
    ):
        response = await admin.get(url, params=params)
        assert response.status_code == 200, response.text
        assert response.json()["data"] == []


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "1001", "\u0661\u0660", "1_0", "9" * 5000])
async def test_bad_page_sizes_are_a_400(admin: httpx.AsyncClient, limit: str) -> None:
    """Listing limits outside 1..1000 or not integers are refused, with the parameter named."""
    assert_error(await admin.get("/admin/accounts", params={"limit": limit}), 400, param="limit")
    assert_error(await admin.get("/admin/usage/records", params={"limit": limit}), 400, param="limit")


async def test_the_ingress_contexts_redis_is_used_when_present(aredis_client: aredis.Redis) -> None:
    """Mounted in the ingress app, the routes use ``app.state.ingress.redis`` (the lifespan's client)."""
    settings = settings_from_mapping({"admin_token": ADMIN_TOKEN}, env={})
    app = Starlette(routes=admin_routes(settings))
    app.state.ingress = SimpleNamespace(redis=aredis_client)
    async with client_for(app) as client:
        created = await client.post("/admin/accounts", json={"id": "via-context"}, headers=AUTH)
    assert created.status_code == 201
    assert await accounts.get_account(aredis_client, "via-context") is not None


async def test_pools_show_queue_depth_and_live_workers(
    admin: httpx.AsyncClient, aredis_client: aredis.Redis
) -> None:
    """Each configured or seen pool shows its queued jobs and only workers with a recent heartbeat."""
    await aredis_client.rpush(keys.rq_queue_key("simulated"), "job-1", "job-2")
    now = time.time()
    await aredis_client.zadd(keys.pool_workers("simulated"), {"w-alive": now, "w-dead": now - 3600})
    await aredis_client.sadd(keys.POOLS_SET, "legacy")
    pools = {p["pool"]: p for p in (await admin.get("/admin/pools")).json()["data"]}
    assert set(pools) == {"simulated", "legacy"}
    assert (pools["simulated"]["queued"], pools["simulated"]["configured"]) == (2, True)
    assert [w["name"] for w in pools["simulated"]["workers"]] == ["w-alive"]
    assert (pools["legacy"]["queued"], pools["legacy"]["configured"], pools["legacy"]["workers"]) == (
        0,
        False,
        [],
    )


async def test_pools_show_their_batch_lane(admin: httpx.AsyncClient, aredis_client: aredis.Redis) -> None:
    """Each pool shows its batch lane: lines queued in it and lines workers are running."""
    await aredis_client.rpush(keys.rq_queue_key(keys.batch_lane("simulated")), "line-1", "line-2", "line-3")
    await aredis_client.zadd(keys.rq_started_registry(keys.batch_lane("simulated")), {"line-0": 1})
    pools = {p["pool"]: p for p in (await admin.get("/admin/pools")).json()["data"]}
    assert pools["simulated"]["batch_lane"] == {"queued": 3, "running": 1}
