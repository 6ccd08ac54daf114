"""Accounts: creation, lookup, listing, plan and status changes, dashboard tokens, and their keys."""

from __future__ import annotations

import pytest
import redis.asyncio as aredis

from ingress import api_keys
from ingress.control import accounts
from ingress.control.accounts import AccountNotFound
from shared import credits, keys
from shared.errors import InvalidRequest
from shared.settings import Settings, settings_from_mapping

SETTINGS = Settings()


async def test_create_then_get_and_list_in_creation_order(store: aredis.Redis) -> None:
    """A new account is active on the default plan unless told otherwise, and lists in creation order."""
    first, token = await accounts.create_account(store, SETTINGS, name="Ada")
    second, _ = await accounts.create_account(store, SETTINGS, name="Bob", plan="business")
    assert first.id.startswith("acct_") and token.startswith("dt-")
    assert (first.plan, first.status, first.active) == ("unverified", "active", True)
    assert await accounts.get_account(store, first.id) == first
    assert second.plan == "business"
    assert [a.id for a in await accounts.list_accounts(store)] == [first.id, second.id]
    assert [a.id for a in await accounts.list_accounts(store, offset=1, limit=5)] == [second.id]
    assert await accounts.count_accounts(store) == 2
    assert await accounts.get_account(store, "acct_nope") is None


async def test_default_plan_comes_from_settings(store: aredis.Redis) -> None:
    """Operators choose the plan new accounts start on."""
    settings = settings_from_mapping({"default_plan": "developer"}, env={})
    account, _ = await accounts.create_account(store, settings)
    assert account.plan == "developer"


async def test_explicit_ids_are_checked_and_never_reused(store: aredis.Redis) -> None:
    """A chosen id must be well formed and free; taking it twice is refused with account_exists."""
    account, _ = await accounts.create_account(store, SETTINGS, account_id="team-a")
    assert account.id == "team-a"
    with pytest.raises(InvalidRequest) as taken:
        await accounts.create_account(store, SETTINGS, account_id="team-a", name="other")
    assert taken.value.code == "account_exists"
    assert (await accounts.require_account(store, "team-a")).name == ""
    for bad in ("", "-leading", "has space", "x" * 129, "trailing-newline\n", "{braced}"):
        with pytest.raises(InvalidRequest):
            await accounts.create_account(store, SETTINGS, account_id=bad or "/")


async def test_unknown_plan_status_or_long_name_is_refused(store: aredis.Redis) -> None:
    """Plans must exist in the settings, statuses are active/suspended, names are bounded."""
    with pytest.raises(InvalidRequest) as caught:
        await accounts.create_account(store, SETTINGS, plan="platinum")
    assert caught.value.param == "plan"
    account, _ = await accounts.create_account(store, SETTINGS)
    with pytest.raises(InvalidRequest):
        await accounts.update_account(store, SETTINGS, account.id, status="deleted")
    with pytest.raises(InvalidRequest):
        await accounts.update_account(store, SETTINGS, account.id, name="n" * 201)
    assert await accounts.get_account(store, account.id) == account


async def test_update_changes_plan_status_and_name(store: aredis.Redis) -> None:
    """An update writes only what it is given and returns the new record."""
    account, _ = await accounts.create_account(store, SETTINGS, name="old")
    updated = await accounts.update_account(store, SETTINGS, account.id, plan="business")
    assert (updated.plan, updated.status, updated.name) == ("business", "active", "old")
    updated = await accounts.update_account(store, SETTINGS, account.id, status="suspended", name="new")
    assert (updated.plan, updated.status, updated.name, updated.active) == (
        "business",
        "suspended",
        "new",
        False,
    )
    with pytest.raises(AccountNotFound) as caught:
        await accounts.update_account(store, SETTINGS, "acct_nope", plan="business")
    assert caught.value.status == 404
    assert not await store.exists(keys.account("acct_nope"))


async def test_plan_change_is_copied_onto_the_accounts_keys(store: aredis.Redis) -> None:
    """Keys carry their account's plan, and follow it when it changes; other accounts' keys do not."""
    account, _ = await accounts.create_account(store, SETTINGS, plan="developer")
    other, _ = await accounts.create_account(store, SETTINGS, plan="developer")
    secret, record = await accounts.create_key_for_account(store, SETTINGS, account.id, name="ci")
    await accounts.create_key_for_account(store, SETTINGS, other.id)
    assert (record.plan, record.name, record.account_id) == ("developer", "ci", account.id)
    await accounts.update_account(store, SETTINGS, account.id, plan="business")
    looked_up = await api_keys.lookup(store, api_keys.digest(secret))
    assert looked_up is not None and looked_up.plan == "business"
    assert [k.plan for k in await api_keys.list_keys(store, other.id)] == ["developer"]


async def test_keys_need_an_existing_account_and_list_per_account(store: aredis.Redis) -> None:
    """Creating a key for an unknown account is a 404; listing by account returns only its keys."""
    with pytest.raises(AccountNotFound):
        await accounts.create_key_for_account(store, SETTINGS, "acct_nope")
    assert await store.hlen(keys.API_KEYS_INDEX) == 0
    account, _ = await accounts.create_account(store, SETTINGS)
    _, one = await accounts.create_key_for_account(store, SETTINGS, account.id, name="one")
    _, two = await accounts.create_key_for_account(store, SETTINGS, account.id, name="two")
    await api_keys.create_key(store, account_id="someone-else")
    assert [k.key_id for k in await api_keys.list_keys(store, account.id)] == [one.key_id, two.key_id]
    assert len(await api_keys.list_keys(store)) == 3
    assert await api_keys.list_keys(store, "nobody") == []


async def test_dashboard_token_signs_in_until_rotated(store: aredis.Redis) -> None:
    """The dashboard token finds its account; after a rotation only the new token does."""
    account, token = await accounts.create_account(store, SETTINGS)
    found = await accounts.account_for_dashboard_token(store, token)
    assert found is not None and found.id == account.id
    assert await store.hget(keys.account(account.id), "dashboard_token_digest") != token.encode()
    new_token = await accounts.rotate_dashboard_token(store, account.id)
    assert await accounts.account_for_dashboard_token(store, token) is None
    renewed = await accounts.account_for_dashboard_token(store, new_token)
    assert renewed is not None and renewed.id == account.id
    assert await accounts.account_for_dashboard_token(store, "dt-forged") is None
    assert await accounts.account_for_dashboard_token(store, "ak-not-a-dashboard-token") is None


async def test_concurrent_rotations_leave_one_token_that_signs_in(store: aredis.Redis) -> None:
    """Ten rotations at once: one token signs in afterwards (the one the account names), no other."""
    import asyncio

    account, first = await accounts.create_account(store, SETTINGS)
    tokens = await asyncio.gather(*(accounts.rotate_dashboard_token(store, account.id) for _ in range(10)))
    signing_in = [t for t in [first, *tokens] if await accounts.account_for_dashboard_token(store, t)]
    assert len(signing_in) == 1
    assert len([k async for k in store.scan_iter(keys.dashboard_token("*"))]) == 1


async def test_rotating_the_token_of_no_account_is_404_and_writes_nothing(store: aredis.Redis) -> None:
    with pytest.raises(AccountNotFound):
        await accounts.rotate_dashboard_token(store, "nobody")
    assert [k async for k in store.scan_iter(keys.dashboard_token("*"))] == []
    assert not await store.exists(keys.account("nobody"))


async def test_ids_with_colons_never_reach_another_accounts_keys(store: aredis.Redis) -> None:
    """Accounts "a" and "a:keys" / "a:ledger" keep apart: keys, credit and records never overlap."""
    plain, _ = await accounts.create_account(store, SETTINGS, account_id="a")
    tricky, _ = await accounts.create_account(store, SETTINGS, account_id="a:keys")
    await accounts.create_account(store, SETTINGS, account_id="a:ledger")
    await accounts.create_key_for_account(store, SETTINGS, plain.id)
    await credits.add_credit(store, plain.id, 5)
    assert await accounts.get_account(store, "a:keys") == tricky
    assert (await credits.get_balance(store, "a:ledger")).balance == 0
    assert len({keys.account("a:keys"), keys.account_api_keys("a"), keys.credit_ledger("a")}) == 3
