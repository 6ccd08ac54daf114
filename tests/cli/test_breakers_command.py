"""`aiorouter breakers` against the real Redis test database: the catalog's deployments and their states."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import redis
import redis.asyncio as aredis

from cli import main
from shared.breaker import CircuitBreaker
from shared.settings import BreakerSettings
from tests.cli.stderr_lines import after_redis_line
from tests.store_calls import record_failure


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, clean_redis: redis.Redis, redis_url: str) -> redis.Redis:
    """Point the command at the flushed test database with the built-in catalog."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("AIOROUTER_CONFIG", raising=False)
    return clean_redis


def trip(redis_url: str, deployment: str) -> None:
    async def record() -> None:
        client = aredis.Redis.from_url(redis_url)
        try:
            await record_failure(
                client, CircuitBreaker(client, BreakerSettings(failure_threshold=1)), deployment
            )
        finally:
            await client.aclose()

    asyncio.run(record())


def test_json_lists_every_catalog_deployment(
    cli_env: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--json` prints one row per catalog deployment; a tripped one is open with a trip counted."""
    trip(redis_url, "simulated/lorem")
    assert main(["breakers", "--json"]) == 0
    rows = {row["deployment"]: row for row in orjson.loads(capsys.readouterr().out)}
    assert rows["simulated/echo"]["status"] == "closed"
    assert rows["simulated/lorem"]["status"] == "open" and rows["simulated/lorem"]["trips"] == 1


def test_table_shows_state_per_deployment(
    cli_env: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The table has a header and one line per deployment with its state."""
    trip(redis_url, "simulated/echo")
    assert main(["breakers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["DEPLOYMENT", "STATE", "FAILURES"]
    states = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert states == {"simulated/echo": "open", "simulated/lorem": "closed"}


def test_unreachable_redis_is_one_line_and_status_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without Redis the command says so on one stderr line and exits 1, no traceback."""
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.delenv("AIOROUTER_CONFIG", raising=False)
    assert main(["breakers"]) == 1
    err = after_redis_line(capsys.readouterr().err)
    assert err.startswith("aiorouter breakers: cannot reach Redis") and len(err.strip().splitlines()) == 1
