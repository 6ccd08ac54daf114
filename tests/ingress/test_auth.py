"""API key authentication: malformed keys never reach Redis, the cache is short and bounded, revoked
keys stop working once their cache entry expires."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ingress import api_keys
from ingress.api_keys import ApiKeyRecord
from ingress.auth import Authenticator
from shared import keys
from shared.errors import AuthenticationError
from tests.ingress.conftest import MESSAGES, MODEL, Ingress, IngressFactory
from tests.ingress.test_app import assert_error


class UntouchableRedis:
    """Fails the test if anything talks to Redis."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Redis was used: {name}")


class CountingRedis:
    """Answers HGETALL from a dict of key records and counts the calls."""

    def __init__(self, records: dict[str, ApiKeyRecord]) -> None:
        self.records = records
        self.calls = 0

    async def hgetall(self, name: str) -> dict[bytes, bytes]:
        self.calls += 1
        record = self.records.get(name)
        return {str(k).encode(): str(v).encode() for k, v in record.to_hash().items()} if record else {}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record_for(secret: str, records: dict[str, ApiKeyRecord], revoked: bool = False) -> ApiKeyRecord:
    record = ApiKeyRecord("key_1", "acct", "developer", "", 0.0, revoked=revoked)
    records[keys.api_key(api_keys.digest(secret))] = record
    return record


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Basic abc", "Bearer ak-short", "Bearer " + "x" * 43 + "!", "Token ak-" + "a" * 43],
)
async def test_malformed_header_is_refused_without_redis(header: str | None) -> None:
    """A missing or malformed Authorization header is a 401 decided without any Redis call."""
    auth = Authenticator(UntouchableRedis(), ttl=2.0)  # type: ignore[arg-type]
    with pytest.raises(AuthenticationError) as caught:
        await auth.authenticate(header)
    assert caught.value.code == "invalid_api_key"


async def test_valid_key_is_cached_for_the_ttl() -> None:
    """A good key is looked up once per TTL, then again after it expires."""
    secret = api_keys.generate_secret()
    records: dict[str, ApiKeyRecord] = {}
    record_for(secret, records)
    redis, clock = CountingRedis(records), Clock()
    auth = Authenticator(redis, ttl=2.0, clock=clock)  # type: ignore[arg-type]
    for _ in range(3):
        assert (await auth.authenticate(f"Bearer {secret}")).key_id == "key_1"
    assert redis.calls == 1
    clock.now += 2.5
    await auth.authenticate(f"Bearer {secret}")
    assert redis.calls == 2


async def test_unknown_key_is_cached_briefly() -> None:
    """An unknown key's negative answer is cached (at most a second), so floods of bad keys spare Redis."""
    redis, clock = CountingRedis({}), Clock()
    auth = Authenticator(redis, ttl=2.0, clock=clock)  # type: ignore[arg-type]
    header = f"Bearer {api_keys.generate_secret()}"
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            await auth.authenticate(header)
    assert redis.calls == 1
    clock.now += 1.1
    with pytest.raises(AuthenticationError):
        await auth.authenticate(header)
    assert redis.calls == 2


async def test_cache_is_bounded() -> None:
    """The cache never holds more than max_entries keys; the oldest entry goes first."""
    records: dict[str, ApiKeyRecord] = {}
    secrets = [api_keys.generate_secret() for _ in range(3)]
    for secret in secrets:
        record_for(secret, records)
    redis = CountingRedis(records)
    auth = Authenticator(redis, ttl=60.0, max_entries=2)  # type: ignore[arg-type]
    for secret in secrets:
        await auth.authenticate(f"Bearer {secret}")
    assert redis.calls == 3
    await auth.authenticate(f"Bearer {secrets[2]}")  # still cached
    assert redis.calls == 3
    await auth.authenticate(f"Bearer {secrets[0]}")  # evicted
    assert redis.calls == 4


async def test_revoked_record_is_refused() -> None:
    """A key whose record says revoked is a 401 even though the record exists."""
    secret = api_keys.generate_secret()
    records: dict[str, ApiKeyRecord] = {}
    record_for(secret, records, revoked=True)
    auth = Authenticator(CountingRedis(records), ttl=2.0)  # type: ignore[arg-type]
    with pytest.raises(AuthenticationError):
        await auth.authenticate(f"Bearer {secret}")


async def test_missing_key_is_401_envelope(ingress: Ingress) -> None:
    """A completion without Authorization is a 401 authentication_error / invalid_api_key envelope."""
    response = await ingress.client.post("/v1/chat/completions", json={}, headers={"X-Request-Id": "r1"})
    assert_error(response, 401, "authentication_error", "invalid_api_key")
    assert response.headers["x-request-id"] == "r1"


async def test_unknown_key_is_401(ingress: Ingress) -> None:
    """A well-formed key that was never created is refused."""
    headers = {"Authorization": f"Bearer {api_keys.generate_secret()}"}
    response = await ingress.client.get("/v1/models", headers=headers)
    assert_error(response, 401, "authentication_error", "invalid_api_key")


async def test_aiorouter_prefixed_key_is_accepted(ingress: Ingress) -> None:
    """The API reference's `aiorouter_<key>` form authenticates like the bare key."""
    response = await ingress.client.get(
        "/v1/models", headers={"Authorization": f"Bearer aiorouter_{ingress.api_key}"}
    )
    assert response.status_code == 200


async def test_revoked_key_is_refused_once_the_cache_expires(ingress_factory: IngressFactory) -> None:
    """After revocation a key keeps working at most key_cache_ttl, then every request is a 401."""
    async with ingress_factory(key_cache_ttl=0.3) as ingress:
        assert (await ingress.client.get("/v1/models", headers=ingress.headers())).status_code == 200
        assert await api_keys.revoke_key(ingress.redis, ingress.record.key_id)
        await asyncio.sleep(0.5)  # past key_cache_ttl: the passing time is what is tested
        response = await ingress.client.get("/v1/models", headers=ingress.headers())
        assert_error(response, 401, "authentication_error", "invalid_api_key")


async def test_a_repeated_authorization_header_is_read_as_its_first_on_every_route(ingress: Ingress) -> None:
    """Of two Authorization headers, chat completions reads the first, as every other route does: a good
    key then a bad one authenticates, a bad one then a good one does not."""
    good, bad = f"Bearer {ingress.api_key}", f"Bearer {api_keys.generate_secret()}"
    body = {"model": MODEL, "messages": MESSAGES}
    for first, second, status in ((bad, good, 401), (good, bad, None)):
        headers = [("authorization", first), ("authorization", second), ("content-type", "application/json")]
        chat = await ingress.client.post("/v1/chat/completions", json=body, headers=headers)
        models = await ingress.client.get("/v1/models", headers=headers)
        if status == 401:
            assert_error(chat, 401, "authentication_error", "invalid_api_key")
            assert models.status_code == 401
        else:
            assert models.status_code == 200
            assert chat.status_code != 401  # authenticated (no worker serves it here: 503 is fine)


async def test_a_completion_the_key_store_cannot_check_is_a_503_with_retry_after(
    ingress: Ingress, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis unreachable while a key is looked up: 503 with ``Retry-After``, as every 503 of a
    completion (docs/api.md)."""
    import redis.exceptions

    async def unreachable(*args: object, **kwargs: object) -> None:
        raise redis.exceptions.ConnectionError("refused")

    monkeypatch.setattr(api_keys, "lookup", unreachable)
    headers = {"Authorization": f"Bearer {api_keys.generate_secret()}"}  # not cached: looked up
    response = await ingress.client.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES}, headers=headers
    )
    assert_error(response, 503, "service_unavailable", "service_unavailable")
    assert response.headers["retry-after"] == "1"
