"""Accounts under load through the real ingress, workers and Redis: concurrent requests never spend past
a balance, three ingress processes share one rate limit, and a revoked key stops working within the key
cache TTL."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import openai
import pytest
import redis

from shared import credits, keys, usage
from shared.settings import load_settings
from tests.e2e.running_system import RunningSystem, Service, _start, free_port
from tests.waiting import eventually_sync

ADMIN_TOKEN = "admin-limits-test-token-0123456789abcdef"
MODEL = "aiorouter/priced-echo"
CONFIG = f"""
worker_heartbeat_interval = 0.5
worker_dead_after = 3.0
key_cache_ttl = 1.0
admin_token = "{ADMIN_TOKEN}"

[providers.simulated]
kind = "simulated"

[[models]]
id = "{MODEL}"
input_price_per_m = 1000.0
output_price_per_m = 2000.0
deployments = [{{ provider = "simulated", upstream_model = "echo" }}]
"""
MESSAGES = [{"role": "user", "content": "count my money"}]
BODY = {"model": MODEL, "messages": MESSAGES, "max_tokens": 50}


@pytest.fixture(scope="module")
def system(launch_system) -> RunningSystem:  # type: ignore[no-untyped-def]
    """One ingress (admin API on) and two workers of the simulated pool, with an expensive model."""
    return launch_system(CONFIG, pools=["simulated"], workers_per_pool=2)


def admin(system: RunningSystem, method: str, path: str, **options: Any) -> dict[str, Any]:
    response = httpx.request(
        method,
        system.origin + path,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
        **options,
    )
    assert response.status_code < 300, response.text
    body: dict[str, Any] = response.json()
    return body


def new_account(system: RunningSystem, account_id: str, plan: str, credit_micros: int = 0) -> str:
    """An account on ``plan`` holding ``credit_micros``; returns a new key's secret."""
    admin(system, "POST", "/admin/accounts", json={"id": account_id, "plan": plan})
    if credit_micros:
        admin(system, "POST", f"/admin/accounts/{account_id}/credits", json={"amount_micros": credit_micros})
    secret: str = admin(system, "POST", f"/admin/accounts/{account_id}/keys", json={"name": "t"})["secret"]
    return secret


async def post_all(origins: list[str], secret: str, count: int) -> list[httpx.Response]:
    """``count`` completions at once, spread round-robin over ``origins``."""
    headers = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=count)) as client:
        calls = [
            client.post(f"{origins[n % len(origins)]}/v1/chat/completions", json=BODY, headers=headers)
            for n in range(count)
        ]
        return await asyncio.gather(*calls)


def test_concurrent_requests_never_spend_past_the_balance(system: RunningSystem) -> None:
    """Thirty concurrent requests against a balance that covers three worst cases: the rest get 402, no
    hold is left, the balance never goes below zero, and what was spent is exactly what the usage records
    say each answered request cost."""
    settings = load_settings(system.config, env={})
    model = settings.models[MODEL]
    tokens = credits.max_completion_tokens(settings, model, BODY)
    worst = credits.cost_micros(model, credits.estimate_prompt_tokens(BODY), tokens)  # as admission holds
    start_balance = 3 * worst + worst // 2
    secret = new_account(system, "thrifty", "business", start_balance)
    responses = asyncio.run(post_all([system.origin], secret, 30))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 402}, [r.text for r in responses if r.status_code not in (200, 402)]
    assert 1 <= statuses.count(200) and statuses.count(402) >= 1
    assert all(r.json()["error"]["code"] == "insufficient_quota" for r in responses if r.status_code == 402)

    client = redis.Redis.from_url(system.redis_url)
    try:
        balance = _settled_balance(client, "thrifty")
        records = client.xrange(keys.usage_records("thrifty"))
    finally:
        client.close()
    charged = [usage.UsageRecord.from_fields(fields) for _, fields in records]
    assert len([r for r in charged if r.status == usage.OK]) == statuses.count(200)
    assert balance.spent == sum(r.cost_micros for r in charged) > 0
    assert 0 <= balance.balance == start_balance - balance.spent


def test_three_ingress_processes_share_one_rate_limit(system: RunningSystem, tmp_path: Any) -> None:
    """Ninety requests spread over three ingress processes on a 60/min plan: about 60 are admitted in
    total (plus at most one per second the burst took, as the limit refills), never 180; the rest get
    429 with Retry-After and the X-RateLimit-* headers."""
    secret = new_account(system, "shared-limit", "developer", 10**12)
    extra = [_extra_ingress(system, tmp_path, n) for n in (2, 3)]
    try:
        origins = [system.origin, *(origin for origin, _ in extra)]
        started = time.monotonic()
        responses = asyncio.run(post_all(origins, secret, 90))
        elapsed = time.monotonic() - started
    finally:
        for _, service in extra:
            service.process.terminate()
            service.process.wait(10)
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, [r.text for r in responses if r.status_code not in (200, 429)]
    admitted = statuses.count(200)
    assert 60 <= admitted <= 60 + int(elapsed) + 1, (admitted, elapsed)
    for response in responses:
        assert response.headers["x-ratelimit-limit"] == "60"
        if response.status_code == 429:
            assert 1 <= int(response.headers["retry-after"]) <= 120
            assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_revoked_key_is_refused_within_the_key_cache_ttl(system: RunningSystem) -> None:
    """A key revoked through the admin API, while an ingress has it cached, is refused within
    key_cache_ttl (1 s here) plus a margin for a loaded machine."""
    secret = new_account(system, "revoker", "business", 10**12)
    headers = {"Authorization": f"Bearer {secret}"}
    url = f"{system.origin}/v1/chat/completions"
    assert httpx.post(url, json=BODY, headers=headers, timeout=30).status_code == 200
    key_id = admin(system, "GET", "/admin/accounts/revoker/keys")["data"][0]["id"]
    admin(system, "DELETE", f"/admin/accounts/revoker/keys/{key_id}")

    def refusal() -> httpx.Response | None:
        response = httpx.post(url, json=BODY, headers=headers, timeout=30)
        return response if response.status_code == 401 else None

    assert eventually_sync(refusal, within=5.0, interval=0.1).json()["error"]["code"] == "invalid_api_key"


def _settled_balance(client: redis.Redis, account_id: str) -> credits.Balance:
    """The account's credit once no request holds any (answered requests release within a moment)."""

    def settled() -> credits.Balance | None:
        raw = client.hgetall(keys.credit_balance(account_id))
        balance = credits.Balance(
            account_id, int(raw.get(b"balance", 0)), int(raw.get(b"reserved", 0)), int(raw.get(b"spent", 0))
        )
        return balance if balance.reserved == 0 else None

    return eventually_sync(settled)


def _extra_ingress(system: RunningSystem, workdir: Any, number: int) -> tuple[str, Service]:
    """Another ingress process on the same Redis and settings, ready to serve."""
    port = free_port()
    argv = ["ingress", "--host", "127.0.0.1", "--port", str(port)]
    service = _start(f"ingress #{number}", argv, system.env, workdir)
    origin = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{origin}/readyz", timeout=2).status_code == 200:
                return origin, service
        except httpx.HTTPError:
            pass
        assert service.process.poll() is None, service.log_text()
        time.sleep(0.2)
    service.process.kill()
    raise AssertionError(f"ingress #{number} never became ready\n{service.log_text()}")


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "code"),
    [
        ("GET", "/admin/accounts/nobody", None, 404, "account_not_found"),
        ("POST", "/admin/accounts/nobody/credits", b'{"amount_usd": 5}', 404, "account_not_found"),
        ("POST", "/admin/accounts/e2e/credits", b'{"amount_usd": -5}', 400, None),
        ("POST", "/admin/accounts/e2e/credits", b'{"amount_usd": ', 400, None),
        ("POST", "/admin/accounts", b'{"plan": "platinum"}', 400, None),
        ("PATCH", "/admin/accounts/e2e", b'{"status": "asleep"}', 400, None),
    ],
)
def test_bad_admin_input_is_a_clear_4xx(
    system: RunningSystem, method: str, path: str, content: bytes | None, status: int, code: str | None
) -> None:
    """Unknown accounts, negative or malformed amounts, malformed JSON and unknown plans or statuses get
    a 4xx in the error envelope from the running ingress, with a message saying what is wrong."""
    response = httpx.request(
        method,
        system.origin + path,
        content=content,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and (code is None or error["code"] == code)


def test_openai_sdk_sees_the_documented_refusals(system: RunningSystem) -> None:
    """Through the OpenAI SDK: no credit is a 402 insufficient_quota, the 11th request in a minute on the
    unverified plan a RateLimitError whose Retry-After the SDK would honour, a suspended account a 401."""
    secret = new_account(system, "sdk-user", "unverified")
    client = system.client(api_key=secret)
    with pytest.raises(openai.APIStatusError) as no_credit:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    assert no_credit.value.status_code == 402 and no_credit.value.code == "insufficient_quota"
    for _ in range(9):
        client.models.list()
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    assert limited.value.code == "rate_limit_exceeded"
    assert 1 <= int(limited.value.response.headers["retry-after"]) <= 120
    assert limited.value.response.headers["x-ratelimit-remaining"] == "0"
    admin(system, "PATCH", "/admin/accounts/sdk-user", json={"status": "suspended"})
    with pytest.raises(openai.AuthenticationError) as suspended:
        client.models.list()
    assert suspended.value.code == "account_suspended"
