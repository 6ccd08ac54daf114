"""API keys: their format, and their records in Redis (stored only as SHA-256 digests).

A key is ``ak-`` followed by 43 base64url characters (32 random bytes).  The API reference's
``aiorouter_<key>`` form is accepted too: ``aiorouter_ak-...`` or ``aiorouter_`` + the 43 characters.
:func:`parse_bearer` rejects a malformed key without touching Redis.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

import redis.asyncio as aredis
from redis.typing import EncodableT

from shared import keys

KEY_PREFIX = "ak-"
_BODY = r"[A-Za-z0-9_-]{43}"
_KEY_RE = re.compile(rf"^(?:aiorouter_)?(?:ak-)?({_BODY})$")


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


def _text(value: bytes | str) -> str:
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


async def create_key(
    redis: aredis.Redis, *, account_id: str, plan: str = "developer", name: str = ""
) -> tuple[str, ApiKeyRecord]:
    """Create a key; the secret is returned here once and never stored."""
    secret = generate_secret()
    record = ApiKeyRecord(
        key_id="key_" + secrets.token_hex(8),
        account_id=account_id,
        plan=plan,
        name=name,
        created_at=time.time(),
    )
    key_digest = digest(secret)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.api_key(key_digest), mapping=record.to_hash())
        pipe.hset(keys.API_KEYS_INDEX, record.key_id, key_digest)
        pipe.sadd(keys.account_api_keys(account_id), record.key_id)
        await pipe.execute()
    return secret, record


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
    """Mark a key revoked; False if no such key.  Ingress caches stop trusting it within their TTL."""
    key_digest = await redis.hget(keys.API_KEYS_INDEX, key_id)
    if key_digest is None:
        return False
    await redis.hset(keys.api_key(_text(key_digest)), "revoked", "1")
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
