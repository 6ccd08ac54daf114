"""API keys: their format, and their records in Redis (stored only as SHA-256 digests).

A key is ``ak-`` followed by 43 base64url characters (32 random bytes).  The API reference's
``aiorouter_<key>`` form is accepted too: ``aiorouter_ak-...`` or ``aiorouter_`` + the 43 characters.
:func:`parse_bearer` rejects a malformed key without touching Redis.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aredis
from redis.typing import EncodableT

from shared import keys
from shared.errors import AuthenticationError, InvalidRequest, RateLimitExceeded
from shared.lua import LuaScript

KEY_PREFIX = "ak-"
_BODY = r"[A-Za-z0-9_-]{43}"
_KEY_RE = re.compile(rf"^(?:aiorouter_)?(?:ak-)?({_BODY})$")
_CREATE = LuaScript.load("api_key_create")


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    key_id: str
    account_id: str
    plan: str
    name: str
    created_at: float
    revoked: bool = False
    last_used: float = 0.0  # unix seconds of Redis TIME; 0 = never used

    def to_json(self) -> dict[str, object]:
        """The key as the admin API and dashboard show it (never its secret or digest)."""
        return {
            "id": self.key_id,
            "object": "api_key",
            "account_id": self.account_id,
            "name": self.name,
            "plan": self.plan,
            "created_at": self.created_at,
            "last_used_at": self.last_used or None,
            "revoked": self.revoked,
        }

    def to_hash(self) -> dict[EncodableT, EncodableT]:
        return {
            "key_id": self.key_id,
            "account_id": self.account_id,
            "plan": self.plan,
            "name": self.name,
            "created_at": repr(self.created_at),
            "revoked": "1" if self.revoked else "0",
        }

    @classmethod
    def from_hash(cls, data: Mapping[bytes | str, bytes | str]) -> ApiKeyRecord:
        text = {_text(k): _text(v) for k, v in data.items()}
        return cls(
            key_id=text["key_id"],
            account_id=text["account_id"],
            plan=text.get("plan", "developer"),
            name=text.get("name", ""),
            created_at=float(text.get("created_at", "0")),
            revoked=text.get("revoked") == "1",
            last_used=float(text.get("last_used", "0")),
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


def generate_secret() -> str:
    return KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def parse_bearer(authorization: str | None) -> str | None:
    """The canonical ``ak-...`` key from an ``Authorization`` header value, or None if malformed."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    match = _KEY_RE.match(token.strip())
    return KEY_PREFIX + match.group(1) if match else None


def digest(canonical_key: str) -> str:
    return hashlib.sha256(canonical_key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyCaps:
    """What :func:`create_key` checks atomically before it creates a key on an account."""

    max_live: int = 0  # most unrevoked keys an account may hold; 0 = no cap
    per_hour: int = 0  # most keys an account may create in a rolling hour; 0 = no cap
    refuse_suspended: bool = False  # a suspended account may not create keys (self-service callers)


async def create_key(
    redis: aredis.Redis,
    *,
    account_id: str,
    plan: str = "developer",
    name: str = "",
    caps: KeyCaps = KeyCaps(),
) -> tuple[str, ApiKeyRecord]:
    """Create a key unless ``caps`` forbid it; the secret is returned here once and never stored.

    Raises :class:`~shared.errors.InvalidRequest` (``too_many_keys``) when the account holds
    ``caps.max_live`` unrevoked keys, :class:`~shared.errors.RateLimitExceeded`
    (``key_creation_rate_limited``, with ``Retry-After``) past ``caps.per_hour`` creations in the last hour,
    and :class:`~shared.errors.AuthenticationError` (``account_suspended``) for a suspended account when
    ``caps.refuse_suspended``.
    """
    secret = generate_secret()
    record = ApiKeyRecord(
        key_id="key_" + secrets.token_hex(8),
        account_id=account_id,
        plan=plan,
        name=name,
        created_at=time.time(),
    )
    key_digest = digest(secret)
    fields = [item for pair in record.to_hash().items() for item in pair]
    reply = await _CREATE(
        redis,
        [
            keys.api_key(key_digest),
            keys.API_KEYS_INDEX,
            keys.account_api_keys(account_id),
            keys.key_creations(account_id),
            keys.account(account_id),
            keys.account_live_api_keys(account_id),
        ],
        [
            record.key_id,
            key_digest,
            caps.max_live,
            caps.per_hour,
            keys.KEY_CREATION_WINDOW_MS,
            "1" if caps.refuse_suspended else "0",
            *fields,
        ],
    )
    _raise_refusal(reply, caps)
    return secret, record


def _raise_refusal(reply: list[Any], caps: KeyCaps) -> None:
    outcome = _text(reply[0])
    if outcome == "suspended":
        raise AuthenticationError(
            "This account is suspended; it cannot create keys.", code="account_suspended"
        )
    if outcome == "too_many_keys":
        raise InvalidRequest(
            f"This account already has {caps.max_live} active keys, the most it may hold; revoke one first.",
            code="too_many_keys",
        )
    if outcome == "too_fast":
        retry_after = max(1, math.ceil(int(reply[1]) / 1000))
        raise RateLimitExceeded(
            f"This account created {caps.per_hour} keys in the last hour, the most it may; "
            f"retry in {retry_after} s.",
            code="key_creation_rate_limited",
            headers={"Retry-After": str(retry_after)},
        )


async def lookup(redis: aredis.Redis, key_digest: str) -> ApiKeyRecord | None:
    data = await redis.hgetall(keys.api_key(key_digest))
    return ApiKeyRecord.from_hash(data) if data else None


async def list_keys(redis: aredis.Redis, account_id: str | None = None) -> list[ApiKeyRecord]:
    if account_id is None:
        digests = await redis.hvals(keys.API_KEYS_INDEX)
    else:
        key_ids = list(await redis.smembers(keys.account_api_keys(account_id)))
        digests = [d for d in await redis.hmget(keys.API_KEYS_INDEX, key_ids) if d] if key_ids else []
    if not digests:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for d in digests:
            pipe.hgetall(keys.api_key(_text(d)))
        rows = await pipe.execute()
    records = [ApiKeyRecord.from_hash(row) for row in rows if row]
    if account_id is not None:
        records = [r for r in records if r.account_id == account_id]
    return sorted(records, key=lambda r: r.created_at)


async def revoke_key(redis: aredis.Redis, key_id: str) -> bool:
    """Mark a key revoked (it stays in its account's list) and take it off the account's live keys;
    False if no such key.  Ingress caches stop trusting it within their TTL."""
    key_digest = await redis.hget(keys.API_KEYS_INDEX, key_id)
    if key_digest is None:
        return False
    record = await lookup(redis, _text(key_digest))
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.api_key(_text(key_digest)), "revoked", "1")
        if record is not None:
            pipe.srem(keys.account_live_api_keys(record.account_id), key_id)
        await pipe.execute()
    return True


async def set_account_plan(redis: aredis.Redis, account_id: str, plan: str) -> None:
    """Copy an account's new plan onto each of its keys (the account record is what rate limits read)."""
    key_ids = list(await redis.smembers(keys.account_api_keys(account_id)))
    if not key_ids:
        return
    digests = [d for d in await redis.hmget(keys.API_KEYS_INDEX, key_ids) if d]
    async with redis.pipeline(transaction=True) as pipe:
        for key_digest in digests:
            pipe.hset(keys.api_key(_text(key_digest)), "plan", plan)
        await pipe.execute()
