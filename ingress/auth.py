"""Bearer-key authentication with a small in-process cache in front of Redis.

A malformed ``Authorization`` header is refused without a Redis round trip.  A well-formed key is looked
up by digest and the answer is cached for ``settings.key_cache_ttl`` seconds (unknown keys for at most
:data:`NEGATIVE_TTL`), so a revoked key stops working within seconds on every replica while the hot path
rarely touches Redis.  The cache is bounded: the oldest entry goes when it is full.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import redis.asyncio as aredis
from redis.exceptions import RedisError

from ingress import api_keys
from ingress.api_keys import ApiKeyRecord
from shared.errors import AuthenticationError, ServiceUnavailable

NEGATIVE_TTL: Final = 1.0
MAX_ENTRIES: Final = 10_000


class Authenticator:
    def __init__(
        self,
        redis: aredis.Redis,
        *,
        ttl: float,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._ttl = ttl
        self._negative_ttl = min(ttl, NEGATIVE_TTL)
        self._max_entries = max_entries
        self._clock = clock
        self._cache: dict[str, tuple[float, ApiKeyRecord | None]] = {}

    async def authenticate(self, authorization: str | None) -> ApiKeyRecord:
        """The key record behind an ``Authorization`` header; raises :class:`AuthenticationError`."""
        canonical = api_keys.parse_bearer(authorization)
        if canonical is None:
            message = "Missing API key." if not authorization else "Malformed API key."
            raise AuthenticationError(f"{message} Send 'Authorization: Bearer <key>'.")
        record = await self._record(api_keys.digest(canonical))
        if record is None or record.revoked:
            raise AuthenticationError("Incorrect or revoked API key provided.")
        return record

    async def _record(self, key_digest: str) -> ApiKeyRecord | None:
        now = self._clock()
        cached = self._cache.get(key_digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            record = await api_keys.lookup(self._redis, key_digest)
        except RedisError as exc:
            raise ServiceUnavailable("The key store is unreachable; retry shortly.") from exc
        self._remember(key_digest, record, now)
        return record

    def _remember(self, key_digest: str, record: ApiKeyRecord | None, now: float) -> None:
        self._cache.pop(key_digest, None)
        if len(self._cache) >= self._max_entries:
            del self._cache[next(iter(self._cache))]
        valid = record is not None and not record.revoked
        self._cache[key_digest] = (now + (self._ttl if valid else self._negative_ttl), record)
