"""Which Redis the test session uses: a private redis-server it started, never one it merely found."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import redis

REPO = Path(__file__).resolve().parents[1]


def test_the_session_redis_is_a_private_redis_server(clean_redis: redis.Redis) -> None:
    """Without AIOROUTER_TEST_REDIS_URL the tests run on a redis-server in a temporary directory, without
    persistence, on a port other than the default one."""
    if os.environ.get("AIOROUTER_TEST_REDIS_URL"):
        pytest.skip("AIOROUTER_TEST_REDIS_URL chooses the Redis")
    config = clean_redis.config_get("port", "dir", "save", "appendonly")
    assert config["port"] != "6379"
    assert Path(config["dir"]).is_relative_to(Path(tempfile.gettempdir()).resolve())
    assert config["save"] == "" and config["appendonly"] == "no"


def test_no_redis_fails_the_run_saying_how_to_fix_it(tmp_path: Path) -> None:
    """With no redis-server on PATH and no AIOROUTER_TEST_REDIS_URL, a real-Redis test fails (it does not
    skip), locally as under CI, and the message says what to install or set."""
    unset = ("AIOROUTER_TEST_REDIS_URL", "CI")
    env = {name: value for name, value in os.environ.items() if name not in unset}
    env["PATH"] = str(tmp_path)  # an empty directory: no redis-server
    node = f"{Path(__file__).relative_to(REPO)}::test_the_session_redis_is_a_private_redis_server"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", node],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 error" in run.stdout and "skipped" not in run.stdout
    assert "install redis-server" in run.stdout and "AIOROUTER_TEST_REDIS_URL" in run.stdout
