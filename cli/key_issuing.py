"""Issue an API key on an account, creating the account first when it does not exist yet.

Shared by ``aiorouter keys create`` and ``aiorouter dev`` (its dev key).  A key always belongs to a real
account record (see :mod:`ingress.control.accounts`); the key carries the account's plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aredis

from ingress import api_keys
from ingress.control import accounts
from shared.errors import InvalidRequest
from shared.settings import Settings


@dataclass(frozen=True, slots=True)
class IssuedKey:
    secret: str  # shown once, never stored
    record: api_keys.ApiKeyRecord
    new_account_token: str | None  # the dashboard token of an account created for this key, else None


async def issue_key(
    redis: aredis.Redis, settings: Settings, *, account_id: str, plan: str | None, name: str
) -> IssuedKey:
    """A new key on ``account_id``; the account is created on ``plan`` (default plan if None) if missing.

    Raises :class:`~shared.errors.InvalidRequest` if the account exists on another plan than ``plan``.
    """
    token: str | None = None
    account = await accounts.get_account(redis, account_id)
    if account is None:
        try:
            account, token = await accounts.create_account(
                redis, settings, account_id=account_id, plan=plan, name=account_id
            )
        except InvalidRequest as exc:
            if exc.code != "account_exists":
                raise
            account = await accounts.require_account(redis, account_id)  # created concurrently
    if plan is not None and account.plan != plan:
        raise InvalidRequest(
            f"account {account.id} is on plan {account.plan!r}, not {plan!r}; a key takes its account's plan",
            param="plan",
        )
    secret, record = await accounts.create_key_for_account(redis, settings, account.id, name=name)
    return IssuedKey(secret, record, token)
