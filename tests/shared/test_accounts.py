"""Accounts: creation, lookup, listing, plan and status changes, dashboard tokens, and their keys."""

from __future__ import annotations

import pytest
import redis.asyncio as aredis

from shared import accounts, api_keys, keys
from shared.accounts import AccountNotFound
from shared.errors import InvalidRequest
from shared.settings import Settings, settings_from_mapping

SETTINGS = Settings()


async def test_create_then_get_and_list_in_creation_order(aredis_client: aredis.Redis) -> None:
    """A new account is active on the default plan unless told otherwise, and lists in creation order."""
    first, token = await accounts.create_account(aredis_client, SETTINGS, name="Ada")
    second, _ = await accounts.create_account(aredis_client, SETTINGS, name="Bob", plan="business")
    assert first.id.startswith("acct_") and token.startswith("dt-")
    assert (first.plan, first.status, first.active) == ("unverified", "active", True)
    assert await accounts.get_account(aredis_client, first.id) == first
    assert second.plan == "business"
    assert [a.id for a in await accounts.list_accounts(aredis_client)] == [first.id, second.id]
    assert [a.id for a in await accounts.list_accounts(aredis_client, offset=1, limit=5)] == [second.id]
    assert await accounts.count_accounts(aredis_client) == 2
    assert await accounts.get_account(aredis_client, "acct_nope") is None


async def test_default_plan_comes_from_settings(aredis_client: aredis.Redis) -> None:
    """Operators choose the plan new accounts start on."""
    settings = settings_from_mapping({"default_plan": "developer"}, env={})
    account, _ = await accounts.create_account(aredis_client, settings)
    assert account.plan == "developer"


async def test_explicit_ids_are_checked_and_never_reused(aredis_client: aredis.Redis) -> None:
    """A chosen id must be well formed and free; taking it twice is refused with account_exists."""
    account, _ = await accounts.create_account(aredis_client, SETTINGS, account_id="team-a")
    assert account.id == "team-a"
    with pytest.raises(InvalidRequest) as taken:
        await accounts.create_account(aredis_client, SETTINGS, account_id="team-a", name="other")
    assert taken.value.code == "account_exists"
    assert (await accounts.require_account(aredis_client, "team-a")).name == ""
    for bad in ("", "-leading", "has space", "x" * 129):
        with pytest.raises(InvalidRequest):
            await accounts.create_account(aredis_client, SETTINGS, account_id=bad or "/")


async def test_unknown_plan_status_or_long_name_is_refused(aredis_client: aredis.Redis) -> None:
    """Plans must exist in the settings, statuses are active/suspended, names are bounded."""
    with pytest.raises(InvalidRequest) as caught:
        await accounts.create_account(aredis_client, SETTINGS, plan="platinum")
    assert caught.value.param == "plan"
    account, _ = await accounts.create_account(aredis_client, SETTINGS)
    with pytest.raises(InvalidRequest):
        await accounts.update_account(aredis_client, SETTINGS, account.id, status="deleted")
    with pytest.raises(InvalidRequest):
        await accounts.update_account(aredis_client, SETTINGS, account.id, name="n" * 201)
    assert await accounts.get_account(aredis_client, account.id) == account


async def test_update_changes_plan_status_and_name(aredis_client: aredis.Redis) -> None:
    """An update writes only what it is given and returns the new record."""
    account, _ = await accounts.create_account(aredis_client, SETTINGS, name="old")
    updated = await accounts.update_account(aredis_client, SETTINGS, account.id, plan="business")
    assert (updated.plan, updated.status, updated.name) == ("business", "active", "old")
    updated = await accounts.update_account(
        aredis_client, SETTINGS, account.id, status="suspended", name="new"
    )
    assert (updated.plan, updated.status, updated.name, updated.active) == (
        "business",
        "suspended",
        "new",
        False,
    )
    with pytest.raises(AccountNotFound) as caught:
        await accounts.update_account(aredis_client, SETTINGS, "acct_nope", plan="business")
    assert caught.value.status == 404
    assert not await aredis_client.exists(keys.account("acct_nope"))


async def test_plan_change_is_copied_onto_the_accounts_keys(aredis_client: aredis.Redis) -> None:
    """Keys carry their account's plan, and follow it when it changes; other accounts' keys do not."""
    account, _ = await accounts.create_account(aredis_client, SETTINGS, plan="developer")
    other, _ = await accounts.create_account(aredis_client, SETTINGS, plan="developer")
    secret, record = await accounts.create_key_for_account(aredis_client, account.id, name="ci")
    await accounts.create_key_for_account(aredis_client, other.id)
    assert (record.plan, record.name, record.account_id) == ("developer", "ci", account.id)
    await accounts.update_account(aredis_client, SETTINGS, account.id, plan="business")
    looked_up = await api_keys.lookup(aredis_client, api_keys.digest(secret))
    assert looked_up is not None and looked_up.plan == "business"
    assert [k.plan for k in await api_keys.list_keys(aredis_client, other.id)] == ["developer"]


async def test_keys_need_an_existing_account_and_list_per_account(aredis_client: aredis.Redis) -> None:
    """Creating a key for an unknown account is a 404; listing by account returns only its keys."""
    with pytest.raises(AccountNotFound):
        await accounts.create_key_for_account(aredis_client, "acct_nope")
    assert await aredis_client.hlen(keys.API_KEYS_INDEX) == 0
    account, _ = await accounts.create_account(aredis_client, SETTINGS)
    _, one = await accounts.create_key_for_account(aredis_client, account.id, name="one")
    _, two = await accounts.create_key_for_account(aredis_client, account.id, name="two")
    await api_keys.create_key(aredis_client, account_id="someone-else")
    assert [k.key_id for k in await api_keys.list_keys(aredis_client, account.id)] == [one.key_id, two.key_id]
    assert len(await api_keys.list_keys(aredis_client)) == 3
    assert await api_keys.list_keys(aredis_client, "nobody") == []


async def test_dashboard_token_signs_in_until_rotated(aredis_client: aredis.Redis) -> None:
    """The dashboard token finds its account; after a rotation only the new token does."""
    account, token = await accounts.create_account(aredis_client, SETTINGS)
    found = await accounts.account_for_dashboard_token(aredis_client, token)
    assert found is not None and found.id == account.id
    assert await aredis_client.hget(keys.account(account.id), "dashboard_token_digest") != token.encode()
    new_token = await accounts.rotate_dashboard_token(aredis_client, account.id)
    assert await accounts.account_for_dashboard_token(aredis_client, token) is None
    renewed = await accounts.account_for_dashboard_token(aredis_client, new_token)
    assert renewed is not None and renewed.id == account.id
    assert await accounts.account_for_dashboard_token(aredis_client, "dt-forged") is None
    assert await accounts.account_for_dashboard_token(aredis_client, "ak-not-a-dashboard-token") is None
