"""Credit reservations raced by separate OS processes through the real Redis."""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio as aredis

from ingress.control import accounts
from shared import credits
from shared.settings import Settings

READY, GO = "test:barrier:ready", "test:barrier:go"  # test scaffolding only, never used by AIOrouter

# A separate process: reports ready, waits for the go, then makes COUNT concurrent reservations of
# AMOUNT on one account and prints how many were held.
CHILD = f"""
import asyncio, sys
import redis.asyncio as aredis
from shared import credits
from shared.errors import InsufficientQuota
from shared.lua import run_together
from shared.settings import Settings

async def hold(client, account_id, amount):  # as admission holds credit
    pending = credits.PendingReservation.prepare(Settings(), account_id, amount)
    [reply] = await run_together(client, [pending.call])
    return pending.outcome(reply)

async def main(url, account_id, count, amount):
    client = aredis.Redis.from_url(url, max_connections=count + 1)
    await client.rpush("{READY}", 1)
    await client.blpop(["{GO}"], timeout=30)
    attempts = (hold(client, account_id, amount) for _ in range(count))
    results = await asyncio.gather(*attempts, return_exceptions=True)
    await client.aclose()
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, InsufficientQuota):
            raise result
    print(sum(isinstance(r, credits.Reservation) for r in results))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""


async def test_three_processes_never_hold_more_than_the_balance(
    aredis_client: aredis.Redis, redis_url: str
) -> None:
    """Three processes released at once, racing 150 reservations of 7 each against a balance of 1000,
    hold exactly 142 between them."""
    account, _ = await accounts.create_account(aredis_client, Settings())
    await credits.add_credit(aredis_client, account.id, 1_000)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, redis_url, account.id, "150", "7", stdout=asyncio.subprocess.PIPE
        )
        for _ in range(3)
    ]
    for _ in procs:
        assert await aredis_client.blpop([READY], timeout=30) is not None
    await aredis_client.rpush(GO, 1, 1, 1)
    held = []
    for proc in procs:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0
        held.append(int(out))
    assert sum(held) == 142
    balance = await credits.get_balance(aredis_client, account.id)
    assert (balance.balance, balance.reserved, balance.available) == (1_000, 994, 6)
