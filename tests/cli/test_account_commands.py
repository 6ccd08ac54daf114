"""`aiorouter accounts`, `credits` and `usage` against the real Redis test database."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
import redis
import redis.asyncio as aredis

from cli import main
from ingress.control import accounts
from shared import usage
from tests.cli.stderr_lines import after_redis_line
from tests.store_calls import record_usage


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, clean_redis: redis.Redis, redis_url: str) -> redis.Redis:
    """Point the commands at the flushed test database, whatever the caller's environment says."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("AIOROUTER_CONFIG", raising=False)
    return clean_redis


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err
    return orjson.loads(capsys.readouterr().out)


def test_create_get_update_list(cli_env: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    """An account created with a dashboard token shows up in get and list, and update changes its plan and
    status."""
    created = run_json(capsys, "accounts", "create", "--id", "acme", "--name", "Acme", "--plan", "developer")
    assert isinstance(created, dict) and created["id"] == "acme"
    assert str(created["dashboard_token"]).startswith(accounts.DASHBOARD_TOKEN_PREFIX)
    shown = run_json(capsys, "accounts", "get", "acme")
    assert isinstance(shown, dict) and shown["plan"] == "developer"
    assert shown["rate_limit"] == {"requests_per_minute": 60}
    updated = run_json(capsys, "accounts", "update", "acme", "--plan", "business", "--status", "suspended")
    assert isinstance(updated, dict) and (updated["plan"], updated["status"]) == ("business", "suspended")
    listed = run_json(capsys, "accounts", "list")
    assert isinstance(listed, list) and [a["id"] for a in listed] == ["acme"]
    assert main(["accounts", "list"]) == 0
    assert "acme" in capsys.readouterr().out


def test_credits_add_balance_ledger(cli_env: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    """Credit added twice is the balance, and each grant is a ledger entry with its reason."""
    assert main(["accounts", "create", "--id", "acme"]) == 0
    assert main(["credits", "add", "acme", "12.50", "--reason", "welcome"]) == 0
    assert "12.500000 USD" in capsys.readouterr().out
    run_json(capsys, "credits", "add", "acme", "0.5")
    balance = run_json(capsys, "credits", "balance", "acme")
    assert isinstance(balance, dict) and balance["balance_micros"] == 13_000_000
    assert balance["available_usd"] == "13.000000"
    ledger = run_json(capsys, "credits", "ledger", "acme")
    assert isinstance(ledger, list) and [e["amount_micros"] for e in ledger] == [500_000, 12_500_000]
    assert ledger[1]["reason"] == "welcome" and ledger[1]["actor"] == "cli"


def test_usage_per_account_and_day(
    cli_env: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`usage` reports one account's (or every account's) per-model totals for a day."""
    assert main(["accounts", "create", "--id", "acme"]) == 0
    capsys.readouterr()
    now = time.time()
    record = usage.UsageRecord("r1", "acme", "key_1", "m/a", "p", 10, 5, 42, 120, usage.OK, now)
    asyncio.run(_record(redis_url, record))
    rows = run_json(capsys, "usage", "--account", "acme", "--day", record.day)
    assert isinstance(rows, list) and len(rows) == 1
    assert (rows[0]["model"], rows[0]["requests"], rows[0]["cost_micros"]) == ("m/a", 1, 42)
    everyone = run_json(capsys, "usage")
    assert isinstance(everyone, list) and [r["account_id"] for r in everyone] == ["acme"]
    assert run_json(capsys, "usage", "--day", "2001-01-01") == []


async def _record(redis_url: str, record: usage.UsageRecord) -> None:
    client = aredis.Redis.from_url(redis_url)
    try:
        await record_usage(client, record)
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["accounts", "get", "nobody"], 1, "No account with id 'nobody'"),
        (["accounts", "update", "nobody", "--plan", "business"], 1, "No account"),
        (["accounts", "create", "--plan", "platinum"], 2, "Unknown plan 'platinum'"),
        (["accounts", "create", "--id", "bad id!"], 2, "An account id is"),
        (["credits", "add", "nobody", "5"], 1, "No account with id 'nobody'"),
        (["credits", "add", "acme", "-5"], 2, "more than 0 and at most"),
        (["credits", "add", "acme", "lots"], 2, "Cannot read 'lots'"),
        (["credits", "add", "acme", "1e999999"], 2, "Cannot read '1e999999'"),
        (["credits", "add", "acme", "1_000"], 2, "Cannot read '1_000'"),
        (["usage", "--day", "0001-01-01"], 2, "--day '0001-01-01' is not a date"),
        (["credits", "balance", "nobody"], 1, "No account"),
        (["usage", "--day", "yesterday"], 2, "--day 'yesterday' is not a date"),
    ],
)
def test_bad_input_is_one_clear_line(
    cli_env: redis.Redis, capsys: pytest.CaptureFixture[str], argv: list[str], status: int, message: str
) -> None:
    """Unknown accounts, plans and bad amounts end with one line on stderr and a non-zero exit, no
    traceback."""
    assert main(["accounts", "create", "--id", "acme"]) == 0
    capsys.readouterr()
    assert main(argv) == status
    err = after_redis_line(capsys.readouterr().err)
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
