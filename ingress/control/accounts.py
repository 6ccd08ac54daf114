"""Accounts: who is billed, on which plan, and whether they may call the API at all.

An account record is a Redis hash (:func:`shared.keys.account`): id, name, plan, status
(``active``/``suspended``), the SHA-256 digest of its dashboard token, and its creation time.  Its credit
lives apart, in :mod:`shared.credits`; its API keys in :mod:`ingress.api_keys`.  Rate limits read the
plan and status straight from this record (see :mod:`shared.ratelimit`), so a change here takes effect on
the next request of every replica.

The dashboard token, like an API key's secret, is returned once at creation (or rotation) and only its
digest is stored.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import redis.asyncio as aredis

from ingress import api_keys
from shared import keys
from shared.errors import InvalidRequest, NotFound
from shared.lua import LuaScript
from shared.settings import Settings

Status = Literal["active", "suspended"]
STATUSES: tuple[Status, ...] = ("active", "suspended")
DASHBOARD_TOKEN_PREFIX = "dt-"
MAX_NAME_LENGTH = 200

ACCOUNT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}")
"""Account ids the ``aiorouter keys`` command already accepts; generated ones are ``acct_<hex>``."""

_CREATE = LuaScript.load("account_create")
_ROTATE = LuaScript.load("dashboard_token_rotate")


class AccountNotFound(NotFound):
    default_code = "account_not_found"
    default_message = "No such account."


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str
    plan: str
    status: Status
    created_at: float
    dashboard_token_digest: str = ""

    @property
    def active(self) -> bool:
        return self.status == "active"

    def to_json(self) -> dict[str, Any]:
        """The account as the admin API and dashboard show it (never the token digest)."""
        return {
            "id": self.id,
            "object": "account",
            "name": self.name,
            "plan": self.plan,
            "status": self.status,
            "created_at": self.created_at,
        }

    @classmethod
    def from_hash(cls, data: Mapping[Any, Any]) -> Account:
        text = {_text(k): _text(v) for k, v in data.items()}
        status = text.get("status", "active")
        return cls(
            id=text["id"],
            name=text.get("name", ""),
            plan=text.get("plan", ""),
            status="suspended" if status == "suspended" else "active",
            created_at=float(text.get("created_at", "0")),
            dashboard_token_digest=text.get("dashboard_token_digest", ""),
        )


def generate_dashboard_token() -> str:
    return DASHBOARD_TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_plan(settings: Settings, plan: str) -> str:
    if plan not in settings.plans:
        raise InvalidRequest(f"Unknown plan {plan!r}; plans are: {', '.join(settings.plans)}.", param="plan")
    return plan


def check_status(status: str) -> Status:
    for known in STATUSES:
        if status == known:
            return known
    raise InvalidRequest(f"Unknown status {status!r}; use 'active' or 'suspended'.", param="status")


def check_name(name: str, *, param: str = "name") -> str:
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidRequest(f"A {param} has at most {MAX_NAME_LENGTH} characters.", param=param)
    return name


async def create_account(
    redis: aredis.Redis,
    settings: Settings,
    *,
    name: str = "",
    plan: str | None = None,
    account_id: str | None = None,
) -> tuple[Account, str]:
    """Create an active account; returns it and its dashboard token, shown this once."""
    account_id = account_id or "acct_" + secrets.token_hex(8)
    if not ACCOUNT_ID_RE.fullmatch(account_id):
        raise InvalidRequest(
            "An account id is 1-128 letters, digits and _ . : @ -, starting with a letter or digit.",
            param="id",
        )
    account = Account(
        id=account_id,
        name=check_name(name),
        plan=check_plan(settings, plan or settings.default_plan),
        status="active",
        created_at=time.time(),
    )
    token = generate_dashboard_token()
    digest = token_digest(token)
    created = await _CREATE(
        redis,
        [keys.account(account.id), keys.ACCOUNTS_INDEX, keys.dashboard_token(digest)],
        [account.id, account.name, account.plan, digest, repr(account.created_at)],
    )
    if not created:
        raise InvalidRequest(f"Account {account.id!r} already exists.", param="id", code="account_exists")
    return replace(account, dashboard_token_digest=digest), token


async def get_account(redis: aredis.Redis, account_id: str) -> Account | None:
    data = await redis.hgetall(keys.account(account_id))
    return Account.from_hash(data) if data else None


async def require_account(redis: aredis.Redis, account_id: str) -> Account:
    """The account, or :class:`AccountNotFound` (404)."""
    account = await get_account(redis, account_id)
    if account is None:
        raise AccountNotFound(f"No account with id {account_id!r}.")
    return account


async def list_accounts(redis: aredis.Redis, *, offset: int = 0, limit: int = 100) -> list[Account]:
    """Accounts in creation order."""
    ids = await redis.zrange(keys.ACCOUNTS_INDEX, offset, offset + limit - 1)
    if not ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for account_id in ids:
            pipe.hgetall(keys.account(_text(account_id)))
        rows = await pipe.execute()
    return [Account.from_hash(row) for row in rows if row]


async def count_accounts(redis: aredis.Redis) -> int:
    return int(await redis.zcard(keys.ACCOUNTS_INDEX))


async def update_account(
    redis: aredis.Redis,
    settings: Settings,
    account_id: str,
    *,
    name: str | None = None,
    plan: str | None = None,
    status: str | None = None,
) -> Account:
    """Change an account's name, plan and/or status; a new plan is copied onto its keys too."""
    await require_account(redis, account_id)
    changes: dict[str, str] = {}
    if name is not None:
        changes["name"] = check_name(name)
    if plan is not None:
        changes["plan"] = check_plan(settings, plan)
    if status is not None:
        changes["status"] = check_status(status)
    if changes:
        await redis.hset(keys.account(account_id), mapping=changes)  # type: ignore[arg-type]
    if plan is not None:
        await api_keys.set_account_plan(redis, account_id, plan)
    return await require_account(redis, account_id)


async def account_for_dashboard_token(redis: aredis.Redis, token: str) -> Account | None:
    """The account a dashboard token signs in as, or None (unknown or replaced token)."""
    if not token.startswith(DASHBOARD_TOKEN_PREFIX):
        return None
    account_id = await redis.get(keys.dashboard_token(token_digest(token)))
    return await get_account(redis, _text(account_id)) if account_id else None


async def rotate_dashboard_token(redis: aredis.Redis, account_id: str) -> str:
    """Replace an account's dashboard token (the old one stops working at once); returns the new one."""
    token = generate_dashboard_token()
    digest = token_digest(token)
    token_keys = keys.dashboard_token("")  # the prefix: the script deletes the old token by its digest
    if not await _ROTATE(
        redis, [keys.account(account_id), keys.dashboard_token(digest)], [digest, account_id, token_keys]
    ):
        raise AccountNotFound(f"No account with id {account_id!r}.")
    return token


async def create_key_for_account(
    redis: aredis.Redis, settings: Settings, account_id: str, *, name: str = "", self_service: bool = False
) -> tuple[str, api_keys.ApiKeyRecord]:
    """Create an API key on an existing account (its plan copied onto the key); the secret is shown once.

    The account's caps (``settings.max_keys_per_account``, ``settings.key_creations_per_hour``) hold for
    every caller; a ``self_service`` caller (the account's own Dashboard) is refused on a suspended account.
    """
    account = await require_account(redis, account_id)
    caps = api_keys.KeyCaps(
        max_live=settings.max_keys_per_account,
        per_hour=settings.key_creations_per_hour,
        refuse_suspended=self_service,
    )
    return await api_keys.create_key(
        redis, account_id=account.id, plan=account.plan, name=check_name(name), caps=caps
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
