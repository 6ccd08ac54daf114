"""One account's rate limit shared by independent clients and by separate OS processes."""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio as aredis

from shared.settings import settings_from_mapping
from tests.store_calls import count_request

READY, GO = "test:barrier:ready", "test:barrier:go"  # test scaffolding only, never used by AIOrouter
PLANS = {"plans": {"team": {"requests_per_minute": 12}}}  # one request per 5 s after a burst of 12

# A separate process (an ingress replica): reports ready, waits for the go, then checks COUNT requests
# concurrently against one account and prints how many were admitted.
CHILD = f"""
import asyncio, sys
import redis.asyncio as aredis
from shared import ratelimit
from shared.settings import settings_from_mapping

async def main(url, account_id, count):
    settings = settings_from_mapping({PLANS!r}, env={{}})
    client = aredis.Redis.from_url(url, max_connections=count + 1)
    await client.rpush("{READY}", 1)
    await client.blpop(["{GO}"], timeout=30)
    async def check():  # as admission counts a request
        call = ratelimit.check_call(settings, account_id=account_id, key_plan="team")
        return ratelimit.decision_from_reply(await call.run(client))

    decisions = await asyncio.gather(*(check() for _ in range(count)))
    await client.aclose()
    print(sum(d.allowed for d in decisions))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_three_clients_share_one_limit(aredis_client: aredis.Redis, redis_url: str) -> None:
    """Three independent Redis clients, 10 concurrent requests each, admit 12 together, not 36."""
    settings = settings_from_mapping(PLANS, env={})
    clients = [aredis.Redis.from_url(redis_url) for _ in range(3)]
    try:
        decisions = await asyncio.gather(
            *(
                count_request(client, settings, account_id="acct_shared", key_plan="team")
                for client in clients
                for _ in range(10)
            )
        )
    finally:
        for client in clients:
            await client.aclose()
    admitted = [d for d in decisions if d.allowed]
    assert len(admitted) == 12
    assert sorted(d.remaining for d in admitted) == list(range(12))
    assert all(d.retry_after_seconds == 5 for d in decisions if not d.allowed)


async def test_three_processes_share_one_limit(aredis_client: aredis.Redis, redis_url: str) -> None:
    """Three processes (as three ingress replicas) released at once admit exactly the plan's 12."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, redis_url, "acct_replicas", "10", stdout=asyncio.subprocess.PIPE
        )
        for _ in range(3)
    ]
    for _ in procs:
        assert await aredis_client.blpop([READY], timeout=30) is not None
    await aredis_client.rpush(GO, 1, 1, 1)
    admitted = []
    for proc in procs:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0
        admitted.append(int(out))
    assert sum(admitted) == 12
