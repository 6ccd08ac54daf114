"""Script calls made together in one round trip, or queued as EVAL commands, on a server that has never
seen the scripts (fakeredis: its own script cache, so the real server's is never flushed)."""

from __future__ import annotations

from importlib import resources

import fakeredis
import pytest

from shared import credits, keys, ratelimit
from shared.errors import InsufficientQuota
from shared.lua import LuaScript, compact, run_together
from shared.redis_commands import replay
from shared.settings import settings_from_mapping
from tests.store_calls import hold_credit

SETTINGS = settings_from_mapping({}, env={})


@pytest.fixture
async def server() -> fakeredis.aioredis.FakeRedis:
    """A fresh in-memory server that knows no script yet."""
    client = fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer())
    await client.hset(keys.credit_balance("acme"), "balance", 1_000)
    return client


async def test_unknown_scripts_are_loaded_and_each_call_runs_once(
    server: fakeredis.aioredis.FakeRedis,
) -> None:
    """On NOSCRIPT each call is loaded and made again alone: the rate limit counts one request, the
    reservation holds its amount once; the next round trip finds the scripts loaded."""
    for expected_remaining in (9, 8):
        check = ratelimit.check_call(SETTINGS, account_id="acme", key_plan="unverified")
        pending = credits.PendingReservation.prepare(SETTINGS, "acme", 100)
        limit_reply, credit_reply = await run_together(server, [check, pending.call])
        assert ratelimit.decision_from_reply(limit_reply).remaining == expected_remaining
        assert pending.outcome(credit_reply).amount == 100
    assert int(await server.hget(keys.credit_balance("acme"), "reserved") or 0) == 200


async def test_a_refused_call_does_not_stop_the_others(server: fakeredis.aioredis.FakeRedis) -> None:
    """A reservation the balance cannot cover is refused in its reply while the rate limit still counts."""
    check = ratelimit.check_call(SETTINGS, account_id="acme", key_plan="unverified")
    pending = credits.PendingReservation.prepare(SETTINGS, "acme", 5_000)
    limit_reply, credit_reply = await run_together(server, [check, pending.call])
    assert ratelimit.decision_from_reply(limit_reply).allowed
    with pytest.raises(InsufficientQuota):
        pending.outcome(credit_reply)


async def test_eval_commands_need_no_loaded_script(server: fakeredis.aioredis.FakeRedis) -> None:
    """A call queued as an EVAL command among others in a pipeline runs on a server that never saw it."""
    reservation = await hold_credit(server, SETTINGS, "acme", 300)
    await server.script_flush()
    async with server.pipeline(transaction=False) as pipe:
        replay(pipe, [credits.settle_call(reservation, 120).command()])
        pipe.hget(keys.credit_balance("acme"), "spent")
        settled, spent = await pipe.execute()
    assert credits.settlement_from_reply(settled).charged == 120 and int(spent) == 120


def test_scripts_are_sent_without_comments_and_keep_their_line_numbers() -> None:
    """What a script sends (EVAL carries it in every final round trip) has no comment and no indentation,
    and as many lines as its file, so a Lua error's line number points into the file."""
    for path in sorted(resources.files("shared.lua").iterdir(), key=lambda p: p.name):
        if not path.name.endswith(".lua"):
            continue
        text = path.read_text(encoding="utf-8")
        sent = LuaScript.load(path.name.removesuffix(".lua")).source
        assert sent.count("\n") == text.count("\n"), path.name
        assert not any(line.startswith(("--", " ", "\t")) for line in sent.split("\n")), path.name
        assert len(sent) < len(text), path.name
    assert compact("  local a = 1 -- kept: code before it\n  -- dropped\n\treturn a\n") == (
        "local a = 1 -- kept: code before it\n\nreturn a\n"
    )


async def test_a_compacted_script_runs(server: fakeredis.aioredis.FakeRedis) -> None:
    """The compacted source is the script: it compiles and runs (by EVAL and by EVALSHA of its SHA-1)."""
    script = LuaScript.load("credit_settle")
    assert await server.eval(script.source, 3, "a", "b", "c", 0, "res_x", 60) == [b"unknown", 0]
    assert await server.evalsha(script.sha, 3, "a", "b", "c", 0, "res_x", 60) == [b"already", 0]
