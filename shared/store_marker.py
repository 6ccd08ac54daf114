"""The store marker: tells a Redis that lost its data (restarted without persistence) from one that kept it.

The first process to start on a Redis writes a random store id under :data:`shared.keys.STORE_MARKER`
(``SET NX``: a fresh Redis simply gets one, it is never demanded), and every process remembers the id it
found at start-up.  Redis keeps the marker exactly as long as it keeps the rest of its data, so a marker
that vanishes, or comes back holding another id, while a process runs means the store lost everything it
held: API keys (every request then gets 401), accounts, balances, reservations.  The process then says so
once in its log and, for the ingress, in ``/readyz``; if the marker comes back with the same id (Redis
restored from a backup taken before), all is well again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

import redis.asyncio as aredis
from redis.exceptions import RedisError

from shared import keys

log = logging.getLogger(__name__)

CHECK_INTERVAL = 5.0  # seconds between two background reads of the marker in each process


class StoreMarker:
    """One process' view of the store it started on."""

    def __init__(self) -> None:
        self.store_id: str | None = None  # the id found (or written) at start-up; None until claimed
        self.lost = False

    async def claim(self, redis: aredis.Redis) -> str:
        """Write a new store id unless Redis holds one already, and remember the one it holds."""
        candidate = secrets.token_hex(8)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.STORE_MARKER, candidate, nx=True)
            pipe.get(keys.STORE_MARKER)
            _, current = await pipe.execute()
        self.store_id = _text(current) if current is not None else candidate
        return self.store_id

    def observe(self, value: bytes | str | None) -> bool:
        """Record a read of the marker: True while the store still holds what this process started on.
        The first read that finds it gone logs the cause once; a read that finds it back logs that."""
        if self.store_id is None:
            return True
        intact = value is not None and _text(value) == self.store_id
        if not intact and not self.lost:
            found = "is gone" if value is None else f"holds another store id ({_text(value)})"
            log.error(
                "Redis lost its data (restart without persistence?): the store marker %s %s, this process "
                "started on store %s. API keys, accounts and balances are missing: restore Redis from a "
                "backup, or restart the AIOrouter processes to accept an empty store.",
                keys.STORE_MARKER,
                found,
                self.store_id,
            )
        elif intact and self.lost:
            log.warning("the store marker %s is back (store %s)", keys.STORE_MARKER, self.store_id)
        self.lost = not intact
        return intact

    async def check(self, redis: aredis.Redis) -> bool:
        """Read the marker (claiming it first if this process has not yet): whether the store is intact."""
        if self.store_id is None:
            await self.claim(redis)
            return True
        return self.observe(await redis.get(keys.STORE_MARKER))


async def watch_store(
    marker: StoreMarker,
    redis: aredis.Redis,
    *,
    interval: float = CHECK_INTERVAL,
    halt: asyncio.Event | None = None,
) -> None:
    """Check the marker every ``interval`` seconds until ``halt`` is set (or the task is cancelled); an
    unreachable Redis is not a loss."""
    halt = halt or asyncio.Event()
    while not halt.is_set():
        try:
            await marker.check(redis)
        except (RedisError, OSError):
            pass
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(halt.wait(), interval)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
