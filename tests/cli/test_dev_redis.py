"""How `aiorouter dev` picks, starts and stops its Redis."""

from __future__ import annotations

import shutil

import pytest
import redis

from cli.dev_redis import choose_redis, dev_redis
from cli.failures import CommandFailed
from shared.settings import load_settings, settings_from_mapping

DEFAULTS = settings_from_mapping({})


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def test_redis_url_in_the_environment_wins() -> None:
    """REDIS_URL (or AIOROUTER_REDIS_URL) selects the configured Redis even when redis-server is on PATH."""
    for var in ("REDIS_URL", "AIOROUTER_REDIS_URL"):
        choice = choose_redis(DEFAULTS, {var: "redis://example:6379/0"}, "/usr/bin/redis-server")
        assert choice.source == "configured" and var in choice.reason


def test_redis_url_in_the_settings_file_counts_as_configured() -> None:
    """A non-default redis_url from the settings file is used as is."""
    settings = settings_from_mapping({"redis_url": "redis://10.0.0.1:6379/2"})
    assert choose_redis(settings, {}, "/usr/bin/redis-server").source == "configured"


def test_private_redis_server_when_on_path() -> None:
    """Without a configured URL, a redis-server on PATH is preferred to the embedded fallback."""
    choice = choose_redis(DEFAULTS, {}, "/opt/bin/redis-server")
    assert choice.source == "redis-server" and "/opt/bin/redis-server" in choice.reason


def test_embedded_fallback_otherwise() -> None:
    """With neither a URL nor redis-server, the embedded fakeredis server is chosen, saying why."""
    choice = choose_redis(DEFAULTS, {}, None)
    assert choice.source == "embedded" and "no redis-server" in choice.reason


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_private_redis_server_starts_and_stops() -> None:
    """The private redis-server answers inside the block and is gone (port closed) after it."""
    with dev_redis(DEFAULTS, {"PATH": "/usr/local/bin:/usr/bin:/bin"}) as server:
        assert server.source == "redis-server" and "private redis-server" in server.description
        assert _answers(server.url)
    assert not _answers(server.url)


def test_embedded_fakeredis_starts_and_stops() -> None:
    """The embedded server answers redis-py inside the block and stops listening after it."""
    with dev_redis(DEFAULTS, {"PATH": ""}) as server:
        assert server.source == "embedded"
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()
    assert not _answers(server.url)


def test_configured_but_unreachable_redis_fails_clearly() -> None:
    """A configured Redis that does not answer stops `dev` with a message naming the URL."""
    settings = load_settings(env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    with (
        pytest.raises(CommandFailed, match=r"redis://127\.0\.0\.1:1/0"),
        dev_redis(settings, {"REDIS_URL": "redis://127.0.0.1:1/0"}),
    ):
        pass


def test_configured_redis_is_used_as_is(redis_url: str) -> None:
    """A reachable configured Redis is handed through unchanged, with the reason in the description."""
    settings = load_settings(env={"REDIS_URL": redis_url})
    with dev_redis(settings, {"REDIS_URL": redis_url}) as server:
        assert server.url == redis_url and "REDIS_URL is set" in server.description
