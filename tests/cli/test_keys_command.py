"""`aiorouter keys` against the real Redis test database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
import redis
import redis.asyncio as aredis

from cli import main
from ingress import api_keys
from shared import keys
from shared.settings import load_settings
from tests.cli.stderr_lines import after_redis_line


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, clean_redis: redis.Redis, redis_url: str) -> redis.Redis:
    """Point the command at the flushed test database, whatever the caller's environment says."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("AIOROUTER_CONFIG", raising=False)
    return clean_redis


def _create(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    assert main(["keys", "create", "--json", *args]) == 0
    created: dict[str, object] = orjson.loads(capsys.readouterr().out)
    return created


def test_create_prints_a_working_secret_once(
    cli_env: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """The printed secret is well formed, its digest maps to the stored record, and it is never stored."""
    assert main(["keys", "create", "--account", "acme", "--plan", "business", "--name", "ci"]) == 0
    out = capsys.readouterr().out
    secret = next(word for word in out.split() if word.startswith("ak-"))
    assert api_keys.parse_bearer(f"Bearer {secret}") == secret
    record = cli_env.hgetall(keys.api_key(api_keys.digest(secret)))
    assert record[b"account_id"] == b"acme" and record[b"plan"] == b"business" and record[b"name"] == b"ci"
    assert record[b"key_id"].decode() in out
    stored = [(name, cli_env.hgetall(name)) for name in cli_env.keys("*") if cli_env.type(name) == b"hash"]
    assert not any(secret.encode() in name + b"".join(row.values()) for name, row in stored)


def test_create_json_has_secret_and_record(cli_env: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    """`--json` prints the secret and every record field; account and plan default from the settings."""
    created = _create(capsys)
    fields = {"secret", "key_id", "account_id", "plan", "name", "created_at", "revoked"}
    assert set(created) == fields | {"dashboard_token"}  # the account was created with this first key
    assert created["account_id"] == "default" and created["revoked"] is False
    assert created["plan"] == load_settings(env={}).default_plan


def test_first_key_creates_the_account(cli_env: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    """The first key of an unknown account creates it on --plan; later keys join it without a new token."""
    first = _create(capsys, "--account", "newco", "--plan", "business")
    second = _create(capsys, "--account", "newco")
    assert str(first["dashboard_token"]).startswith("dt-") and "dashboard_token" not in second
    assert first["plan"] == second["plan"] == "business"
    assert cli_env.hget(keys.account("newco"), "plan") == b"business"


def test_plan_must_match_an_existing_account(
    cli_env: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """Asking for another plan than the existing account's is refused: a key takes its account's plan."""
    _create(capsys, "--account", "acme", "--plan", "developer")
    assert main(["keys", "create", "--account", "acme", "--plan", "business"]) == 2
    err = after_redis_line(capsys.readouterr().err)
    assert "developer" in err and "business" in err and err.count("\n") == 1


def test_list_shows_keys_without_secrets(cli_env: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    """`keys list` shows every key id with its account and status, and never a secret."""
    first = _create(capsys, "--account", "a1")
    second = _create(capsys, "--account", "a2")
    assert main(["keys", "list"]) == 0
    out = capsys.readouterr().out
    assert str(first["key_id"]) in out and str(second["key_id"]) in out and "active" in out
    assert str(first["secret"]) not in out and str(second["secret"]) not in out


def test_list_filters_by_account(cli_env: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    """`keys list --account` lists only that account's keys."""
    mine = _create(capsys, "--account", "mine")
    _create(capsys, "--account", "theirs")
    assert main(["keys", "list", "--account", "mine", "--json"]) == 0
    listed = orjson.loads(capsys.readouterr().out)
    assert [row["key_id"] for row in listed] == [mine["key_id"]]


def test_list_when_empty(cli_env: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty database lists as a plain sentence, exit status 0."""
    assert main(["keys", "list"]) == 0
    assert capsys.readouterr().out == "No keys.\n"


def test_revoke_marks_the_key_revoked(
    cli_env: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`keys revoke KEY_ID` makes lookup report the key revoked and `list` show it so."""
    created = _create(capsys)
    assert main(["keys", "revoke", str(created["key_id"])]) == 0
    assert str(created["key_id"]) in capsys.readouterr().out

    async def look_up() -> api_keys.ApiKeyRecord | None:
        client = aredis.Redis.from_url(redis_url)
        try:
            return await api_keys.lookup(client, api_keys.digest(str(created["secret"])))
        finally:
            await client.aclose()

    record = asyncio.run(look_up())
    assert record is not None and record.revoked
    assert main(["keys", "list"]) == 0
    assert "revoked" in capsys.readouterr().out


def test_revoke_unknown_key_fails_cleanly(cli_env: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    """Revoking an unknown id exits 1 with one line on stderr naming the id."""
    assert main(["keys", "revoke", "key_doesnotexist"]) == 1
    err = after_redis_line(capsys.readouterr().err)
    assert err.count("\n") == 1 and "key_doesnotexist" in err and "Traceback" not in err


def test_unreachable_redis_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With Redis unreachable, every action exits 1 with one stderr line naming the URL, no traceback."""
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    for argv in (["keys", "list"], ["keys", "create"], ["keys", "revoke", "key_x"]):
        assert main(argv) == 1
        err = after_redis_line(capsys.readouterr().err)
        assert err.count("\n") == 1 and "redis://127.0.0.1:1/0" in err and "Traceback" not in err


def test_unknown_plan_is_a_usage_error(cli_env: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    """A plan the settings do not define is refused with exit status 2, naming the known plans."""
    assert main(["keys", "create", "--plan", "platinum"]) == 2
    err = after_redis_line(capsys.readouterr().err)
    assert "platinum" in err and "developer" in err
    assert cli_env.dbsize() == 0


def test_bad_account_id_is_a_usage_error(cli_env: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    """An account id with spaces is refused with exit status 2 before anything is written."""
    assert main(["keys", "create", "--account", "has space"]) == 2
    assert "--account" in capsys.readouterr().err
    assert cli_env.dbsize() == 0


def test_key_cap_is_one_line(
    cli_env: redis.Redis, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Over the account's live-key cap `keys create` exits 2 (a refused request, as in every command)
    with one line saying why, and creates nothing."""
    config = tmp_path / "capped.toml"
    config.write_text("max_keys_per_account = 1\n")
    _create(capsys, "--account", "acme", "--config", str(config))
    assert main(["keys", "create", "--account", "acme", "--config", str(config)]) == 2
    err = after_redis_line(capsys.readouterr().err)
    assert err.count("\n") == 1 and "revoke one first" in err
    assert len(cli_env.smembers(keys.account_api_keys("acme"))) == 1


def test_list_of_an_unknown_account_fails(cli_env: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    """`keys list --account` of an account that does not exist is one line on stderr and exit status 1,
    not an empty list that hides a typo."""
    assert main(["keys", "list", "--account", "no-such-account"]) == 1
    assert "no-such-account" in after_redis_line(capsys.readouterr().err)


def test_list_shows_a_name_s_control_characters_as_escapes(
    cli_env: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key name an account chose in its Dashboard (any text) cannot drive the operator's terminal: its
    escape and control characters are printed as escapes."""
    _create(capsys, "--account", "acme", "--name", "evil\x1b]0;title\x07\nname")
    assert main(["keys", "list", "--account", "acme"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and out.count("\n") == 2
    assert "evil\\x1b]0;title\\x07\\nname" in out
