"""The parts of `aiorouter dev` that decide before anything starts: ports, pools, the printed banner."""

from __future__ import annotations

import asyncio
import re
import socket

import orjson
import pytest
import redis
import redis.asyncio as aredis

from cli import main
from cli.dev_banner import DevSystem, banner
from cli.dev_command import DEV_ACCOUNT, _create_dev_key, _pools, _usable_port
from cli.failures import CommandFailed
from ingress import api_keys
from shared.settings import settings_from_mapping

SYSTEM = DevSystem(
    base_url="http://127.0.0.1:8080/v1",
    dashboard_url="http://127.0.0.1:8080/dashboard",
    dashboard_token="dash-token",
    admin_token="admin-token",
    secret="ak-" + "x" * 43,
    key_id="key_1",
    account_id="dev",
    credit_usd="10.000000",
    model="aiorouter/echo",
    redis="private redis-server",
    pools=("simulated",),
    workers_per_pool=1,
    concurrency=64,
)


def test_busy_port_is_refused_with_a_hint() -> None:
    """A port already in use stops dev before anything starts, suggesting --port 0."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(CommandFailed, match="--port 0"):
            _usable_port(taken.getsockname()[1])


def test_port_zero_picks_a_free_port() -> None:
    """--port 0 resolves to a concrete free port (the banner and /readyz need the number)."""
    assert _usable_port(0) > 0


def test_pools_default_to_the_simulated_providers() -> None:
    """Without --pool, dev serves every simulated provider and nothing else."""
    settings = settings_from_mapping(
        {
            "providers": {"a": {"kind": "simulated"}, "b": {"kind": "openai"}, "c": {"kind": "simulated"}},
            "models": [{"id": "m", "provider": "b"}],
        }
    )
    assert _pools(settings, None) == ["a", "c"]
    assert _pools(settings, ["b"]) == ["b"]
    with pytest.raises(CommandFailed, match="nope"):
        _pools(settings, ["nope"])


def test_banner_curl_bodies_are_valid_json() -> None:
    """Both curl lines carry the key and a JSON body that parses, streaming or not."""
    text = banner(SYSTEM)
    bodies = [orjson.loads(body) for body in re.findall(r"-d '(.*)'", text)]
    assert [b.get("stream", False) for b in bodies] == [False, True]
    assert all(b["model"] == "aiorouter/echo" for b in bodies)
    assert text.count(f"Bearer {SYSTEM.secret}") == 2 and f'api_key="{SYSTEM.secret}"' in text


def test_bad_worker_count_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """--workers 0 is refused with exit status 2 before any process starts."""
    assert main(["dev", "--workers", "0", "--port", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err


def test_each_dev_run_revokes_the_dev_keys_of_earlier_runs(clean_redis: redis.Redis, redis_url: str) -> None:
    """Restarting dev on a kept Redis leaves one live dev key, so the account's key cap is never reached."""
    settings = settings_from_mapping({"max_keys_per_account": 2}, env={})
    issued = [asyncio.run(_create_dev_key(redis_url, settings))[0] for _ in range(3)]
    live = [k for k in asyncio.run(_keys(redis_url)) if not k.revoked]
    assert [k.key_id for k in live] == [issued[-1].record.key_id]


async def _keys(redis_url: str) -> list[api_keys.ApiKeyRecord]:
    client = aredis.Redis.from_url(redis_url)
    try:
        return await api_keys.list_keys(client, DEV_ACCOUNT)
    finally:
        await client.aclose()


def test_dev_keeps_batch_files_in_a_private_directory_unless_one_is_named() -> None:
    """aiorouter dev points the local file store at a fresh temporary directory, but leaves a directory
    named by the settings or the environment alone."""
    import os
    import shutil

    from cli.dev_command import _private_files_dir
    from shared.settings import settings_from_mapping

    env: dict[str, str] = {}
    directory = _private_files_dir(settings_from_mapping({}, env={}), env)
    try:
        assert directory is not None and os.path.isdir(directory)
        assert env["AIOROUTER_BATCH_STORAGE_DIR"] == directory
    finally:
        shutil.rmtree(directory or "", ignore_errors=True)
    named = settings_from_mapping({"batches": {"storage_dir": "/srv/files"}}, env={})
    assert _private_files_dir(named, {}) is None
    assert (
        _private_files_dir(settings_from_mapping({}, env={}), {"AIOROUTER_BATCH_STORAGE_DIR": "/x"}) is None
    )
