"""Which Redis the store commands use: environment, settings file, the running `aiorouter dev`, default."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from cli.dev_record import RECORD_PATH, dev_record, read_dev_record
from cli.redis_finding import find_redis, settings_with_redis
from shared import keys
from shared.settings import Settings, settings_from_mapping

DEFAULTS = settings_from_mapping({})
ELSEWHERE = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def _write_record(workdir: Path, url: str, pid: int) -> Path:
    path = workdir / RECORD_PATH
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(orjson.dumps({"redis_url": url, "pid": pid}))
    return path


@pytest.fixture
def gone_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def command_env() -> Iterator[dict[str, str]]:
    """The environment of a command run by a user who set no Redis and no settings file."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "AIOROUTER_REDIS_URL")}
    env.pop("AIOROUTER_CONFIG", None)
    yield env


def test_environment_wins_over_a_live_dev_record(tmp_path: Path) -> None:
    """REDIS_URL or AIOROUTER_REDIS_URL beats the record of a running dev, and says so."""
    _write_record(tmp_path, ELSEWHERE, os.getpid())
    for var in ("REDIS_URL", "AIOROUTER_REDIS_URL"):
        settings = settings_from_mapping({}, env={var: "redis://10.0.0.1:6379/0"})
        found = find_redis(settings, None, {var: "redis://10.0.0.1:6379/0"}, tmp_path)
        assert found.url == "redis://10.0.0.1:6379/0" and var in found.reason


def test_settings_file_redis_url_wins_over_a_live_dev_record(tmp_path: Path) -> None:
    """A settings file that sets redis_url is used before the dev record; one that does not is not."""
    _write_record(tmp_path, ELSEWHERE, os.getpid())
    configured = settings_from_mapping({"redis_url": "redis://10.0.0.2:6379/3"})
    found = find_redis(configured, "site.toml", {}, tmp_path)
    assert found.url == "redis://10.0.0.2:6379/3" and "site.toml" in found.reason
    found = find_redis(DEFAULTS, "site.toml", {}, tmp_path)
    assert found.url == ELSEWHERE


def test_live_dev_record_is_found_from_a_subdirectory(tmp_path: Path) -> None:
    """A command run below the directory dev was started in finds its Redis and names the record."""
    _write_record(tmp_path, ELSEWHERE, os.getpid())
    below = tmp_path / "src" / "pkg"
    below.mkdir(parents=True)
    found = find_redis(DEFAULTS, None, {}, below)
    assert found.url == ELSEWHERE
    assert "the running 'aiorouter dev'" in found.reason and str(tmp_path / RECORD_PATH) in found.reason


def test_stale_record_falls_back_to_the_default_and_says_so(tmp_path: Path, gone_pid: int) -> None:
    """A record whose pid is gone is ignored: the default Redis, with the stale record named."""
    _write_record(tmp_path, ELSEWHERE, gone_pid)
    found = find_redis(DEFAULTS, None, {}, tmp_path)
    assert found.url == Settings().redis_url
    assert "the default" in found.reason and "stale" in found.reason and str(gone_pid) in found.reason


def test_without_any_record_the_default_is_announced_on_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No environment, no file, no dev: the default URL, named in one line on stderr."""
    for var in ("REDIS_URL", "AIOROUTER_REDIS_URL", "AIOROUTER_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    settings = settings_with_redis(argparse.Namespace(config=None, command="usage"))
    assert settings.redis_url == Settings().redis_url
    err = capsys.readouterr().err
    assert (
        err.startswith(f"aiorouter usage: using {Settings().redis_url} (the default: ")
        and err.count("\n") == 1
    )


def test_dev_record_is_written_for_the_block_and_removed_after(tmp_path: Path) -> None:
    """The record holds the URL and this pid while the block runs and is gone afterwards."""
    with dev_record("redis://127.0.0.1:7777/0", tmp_path) as path:
        assert path == tmp_path / RECORD_PATH
        record = read_dev_record(path)
        assert record is not None and record.redis_url.endswith(":7777/0") and record.pid == os.getpid()
    assert not (tmp_path / RECORD_PATH).exists()


def test_dev_record_of_another_dev_is_left_alone(tmp_path: Path) -> None:
    """If a second dev replaced the record meanwhile, the first one's exit does not delete it."""
    with dev_record("redis://127.0.0.1:7777/0", tmp_path):
        _write_record(tmp_path, ELSEWHERE, os.getppid())
    record = read_dev_record(tmp_path / RECORD_PATH)
    assert record is not None and record.redis_url == ELSEWHERE


def test_keys_create_uses_the_live_dev_record(
    tmp_path: Path, clean_redis: redis.Redis, redis_url: str, command_env: dict[str, str]
) -> None:
    """A real `aiorouter keys create` with no REDIS_URL writes its key to the recorded dev Redis."""
    _write_record(tmp_path, redis_url, os.getpid())  # this test process stands in for the running dev
    done = subprocess.run(
        [sys.executable, "-m", "cli", "keys", "create", "--account", "found", "--json"],
        cwd=tmp_path,
        env=command_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        f"aiorouter keys: using {redis_url} (the running 'aiorouter dev', .aiorouter/dev.json)\n"
    )
    key_id = orjson.loads(done.stdout)["key_id"]
    assert clean_redis.sismember(keys.account_api_keys("found"), key_id)


def test_redis_url_beats_the_dev_record_in_a_real_command(
    tmp_path: Path, clean_redis: redis.Redis, redis_url: str, command_env: dict[str, str]
) -> None:
    """A real `aiorouter accounts list` with REDIS_URL set ignores a live record pointing elsewhere."""
    _write_record(tmp_path, ELSEWHERE, os.getpid())
    done = subprocess.run(
        [sys.executable, "-m", "cli", "accounts", "list"],
        cwd=tmp_path,
        env={**command_env, "REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"aiorouter accounts: using {redis_url} (REDIS_URL is set)\n"
    assert done.stdout.strip() == "No accounts."
