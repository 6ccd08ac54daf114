"""Caps on key creation per account (live keys, creations per hour, suspended accounts), enforced in one
Lua script on fakeredis and a real Redis, whoever mints the key."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis.asyncio as aredis

from ingress import api_keys
from ingress.control import accounts
from shared import keys
from shared.errors import AuthenticationError, InvalidRequest, RateLimitExceeded
from shared.settings import Settings, settings_from_mapping


def capped(max_live: int = 0, per_hour: int = 0) -> Settings:
    return settings_from_mapping(
        {"max_keys_per_account": max_live, "key_creations_per_hour": per_hour}, env={}
    )


def test_default_caps_are_on() -> None:
    """Out of the box an account may hold 100 live keys and create 30 an hour."""
    assert (Settings().max_keys_per_account, Settings().key_creations_per_hour) == (100, 30)


async def test_live_key_cap_counts_only_unrevoked_keys(store: aredis.Redis) -> None:
    """At the cap a new key is a 400 too_many_keys; revoking one makes room for exactly one more."""
    settings = capped(max_live=2)
    account, _ = await accounts.create_account(store, settings, account_id="acme")
    _, first = await accounts.create_key_for_account(store, settings, account.id)
    await accounts.create_key_for_account(store, settings, account.id)
    with pytest.raises(InvalidRequest) as refused:
        await accounts.create_key_for_account(store, settings, account.id)
    assert refused.value.status == 400 and refused.value.code == "too_many_keys"
    assert len(await api_keys.list_keys(store, account.id)) == 2
    await api_keys.revoke_key(store, first.key_id)
    await accounts.create_key_for_account(store, settings, account.id)
    with pytest.raises(InvalidRequest):
        await accounts.create_key_for_account(store, settings, account.id)


async def test_creation_rate_cap_is_a_429_with_retry_after(store: aredis.Redis) -> None:
    """Past the hourly creation cap a key is a 429 key_creation_rate_limited with Retry-After, even when
    the keys were revoked meanwhile; another account is not affected."""
    settings = capped(per_hour=2)
    for account_id in ("acme", "other"):
        await accounts.create_account(store, settings, account_id=account_id)
    for _ in range(2):
        _, record = await accounts.create_key_for_account(store, settings, "acme")
        await api_keys.revoke_key(store, record.key_id)
    with pytest.raises(RateLimitExceeded) as refused:
        await accounts.create_key_for_account(store, settings, "acme")
    assert refused.value.status == 429 and refused.value.code == "key_creation_rate_limited"
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 3600
    assert 0 < await store.pttl(keys.key_creations("acme")) <= keys.KEY_CREATION_WINDOW_MS
    await accounts.create_key_for_account(store, settings, "other")


async def test_suspended_account_cannot_mint_keys_itself(store: aredis.Redis) -> None:
    """A self-service creation on a suspended account is a 401 account_suspended; an operator still may."""
    settings = Settings()
    await accounts.create_account(store, settings, account_id="acme")
    await accounts.update_account(store, settings, "acme", status="suspended")
    with pytest.raises(AuthenticationError) as refused:
        await accounts.create_key_for_account(store, settings, "acme", self_service=True)
    assert refused.value.code == "account_suspended"
    assert await api_keys.list_keys(store, "acme") == []
    await accounts.create_key_for_account(store, settings, "acme")


async def test_concurrent_creations_never_exceed_the_cap(
    connect_store: Callable[[], aredis.Redis],
) -> None:
    """Twenty creations racing on separate connections leave exactly the cap of keys, the rest refused."""
    settings = capped(max_live=5)
    clients = [connect_store() for _ in range(20)]
    await accounts.create_account(clients[0], settings, account_id="acme")
    results = await asyncio.gather(
        *(accounts.create_key_for_account(c, settings, "acme") for c in clients), return_exceptions=True
    )
    created = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, InvalidRequest) and r.code == "too_many_keys"]
    assert (len(created), len(refused)) == (5, 15)
    assert len(await api_keys.list_keys(clients[0], "acme")) == 5


async def test_revoked_keys_stay_listed_and_cost_a_creation_nothing(store: aredis.Redis) -> None:
    """An account that revoked many keys still lists them all, revoked, and counts only the live ones;
    a creation reads the live ones' count, not every key the account ever had (the script touches no
    other key's record: a record it would read is gone here, and the cap still holds exactly)."""
    settings = capped(max_live=2)
    await accounts.create_account(store, settings, account_id="acme")
    revoked = []
    for _ in range(20):
        _, record = await accounts.create_key_for_account(store, settings, "acme")
        await api_keys.revoke_key(store, record.key_id)
        revoked.append(record.key_id)
    listed = await api_keys.list_keys(store, "acme")
    assert {r.key_id for r in listed} == set(revoked) and all(r.revoked for r in listed)
    assert await store.scard(keys.account_live_api_keys("acme")) == 0
    for key_id in revoked:  # the records of revoked keys: a creation must not need them
        key_digest = await store.hget(keys.API_KEYS_INDEX, key_id)
        await store.delete(keys.api_key(key_digest.decode()))
    await accounts.create_key_for_account(store, settings, "acme")
    await accounts.create_key_for_account(store, settings, "acme")
    with pytest.raises(InvalidRequest):
        await accounts.create_key_for_account(store, settings, "acme")
