"""API keys: the secret's format, bearer parsing without Redis, and records stored only as digests."""

from __future__ import annotations

import hashlib

import pytest
import redis.asyncio as aredis

from ingress import api_keys
from shared import keys

BODY = "A" * 43


def test_generated_secret_format() -> None:
    """A secret is `ak-` + 43 base64url characters, different every time, and parses as itself."""
    first, second = api_keys.generate_secret(), api_keys.generate_secret()
    assert first != second and first.startswith("ak-") and len(first) == 46
    assert api_keys.parse_bearer(f"Bearer {first}") == first


@pytest.mark.parametrize(
    "header",
    [f"Bearer ak-{BODY}", f"bearer ak-{BODY}", f"Bearer aiorouter_ak-{BODY}", f"Bearer aiorouter_{BODY}"],
)
def test_accepted_forms_normalize_to_the_canonical_key(header: str) -> None:
    """The ak- key and the API reference's aiorouter_ forms all map to the one canonical key."""
    assert api_keys.parse_bearer(header) == f"ak-{BODY}"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        f"Basic ak-{BODY}",
        "Bearer ak-short",
        f"Bearer ak-{BODY}A",
        f"Bearer ak-{BODY[:-1]}!",
        "Bearer",
    ],
)
def test_malformed_headers_are_refused(header: str | None) -> None:
    """Wrong scheme, length or alphabet gives None (no Redis lookup happens for these)."""
    assert api_keys.parse_bearer(header) is None


def test_digest_is_sha256_hex() -> None:
    """Keys are stored under the hex SHA-256 of the canonical key."""
    assert api_keys.digest("ak-x") == hashlib.sha256(b"ak-x").hexdigest()


async def test_create_lookup_list_revoke(store: aredis.Redis) -> None:
    """A created key is found by digest, listed per account, never stored in clear, and revocable."""
    secret, record = await api_keys.create_key(store, account_id="acme", plan="developer", name="ci")
    await api_keys.create_key(store, account_id="other")
    found = await api_keys.lookup(store, api_keys.digest(secret))
    assert found is not None and found.key_id == record.key_id and not found.revoked
    assert found.account_id == "acme" and found.plan == "developer" and found.name == "ci"
    assert [r.key_id for r in await api_keys.list_keys(store, "acme")] == [record.key_id]
    assert len(await api_keys.list_keys(store)) == 2
    for name in await store.keys("*"):
        assert secret.encode() not in name
        if await store.type(name) == b"hash":
            assert secret.encode() not in b"".join((await store.hgetall(name)).values())
    assert await api_keys.revoke_key(store, record.key_id)
    revoked = await api_keys.lookup(store, api_keys.digest(secret))
    assert revoked is not None and revoked.revoked
    assert not await api_keys.revoke_key(store, "key_unknown")
    assert await store.hget(keys.API_KEYS_INDEX, record.key_id) == api_keys.digest(secret).encode()


async def test_unknown_digest_is_none(store: aredis.Redis) -> None:
    """Looking up a digest nobody created gives None."""
    assert await api_keys.lookup(store, api_keys.digest("ak-" + BODY)) is None


def test_record_from_text_or_bytes() -> None:
    """A record parses from a hash read with or without decode_responses."""
    text = api_keys.ApiKeyRecord("key_1", "acme", "developer", "n", 1.5).to_hash()
    as_bytes = {str(k).encode(): str(v).encode() for k, v in text.items()}
    assert api_keys.ApiKeyRecord.from_hash(as_bytes) == api_keys.ApiKeyRecord.from_hash(
        {str(k): str(v) for k, v in text.items()}
    )
