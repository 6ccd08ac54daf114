"""``redis+sentinel://`` URLs: what they parse to, what is refused, and which clients they build."""

from __future__ import annotations

import pytest
import redis.asyncio as aredis
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.sentinel import SentinelConnectionPool as SyncSentinelConnectionPool

from shared.autopipeline import AutoPipelineRedis
from shared.errors import ConfigError
from shared.redis_client import (
    SentinelURL,
    async_client,
    parse_sentinel_url,
    plain_async_client,
    sync_client,
)
from shared.settings import load_settings


def test_full_url_parses_to_sentinels_service_db_and_credentials() -> None:
    """Several Sentinels, the service name, the database and the master's credentials all come through."""
    parsed = parse_sentinel_url("redis+sentinel://app:s%40cret@10.0.0.1:26380,sentinel-b,[::1]:26381/main/3")
    assert parsed == SentinelURL(
        sentinels=(("10.0.0.1", 26380), ("sentinel-b", 26379), ("::1", 26381)),
        service_name="main",
        db=3,
        username="app",
        password="s@cret",
    )


def test_password_without_user_and_default_database() -> None:
    """``:password@`` sets only the password; a URL without a database uses database 0."""
    parsed = parse_sentinel_url("redis+sentinel://:pw@127.0.0.1:26379/mymaster")
    assert parsed == SentinelURL((("127.0.0.1", 26379),), "mymaster", 0, None, "pw")
    assert parsed.master_options() == {"db": 0, "password": "pw"}


def test_other_schemes_are_not_sentinel_urls() -> None:
    """A plain Redis URL is not parsed as a Sentinel one."""
    assert parse_sentinel_url("redis://127.0.0.1:6379/0") is None
    assert parse_sentinel_url("unix:///tmp/redis.sock") is None


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://127.0.0.1:26379",  # no service name
        "redis+sentinel://127.0.0.1:26379/",  # empty service name
        "redis+sentinel:///mymaster",  # no Sentinel
        "redis+sentinel://a:1,,b:2/mymaster",  # an empty host
        "redis+sentinel://host:port/mymaster",  # a port that is no number
        "redis+sentinel://host:70000/mymaster",  # a port out of range
        "redis+sentinel://host/mymaster/zero",  # a database that is no number
        "redis+sentinel://host/mymaster/0/extra",  # too many path segments
        "redis+sentinel://host/mymaster?ssl=true",  # options are not taken
    ],
)
def test_malformed_urls_are_config_errors(url: str) -> None:
    """Each malformed Sentinel URL is refused with a ConfigError, not half-used."""
    with pytest.raises(ConfigError):
        parse_sentinel_url(url)


def test_refusal_does_not_show_the_password() -> None:
    """The message of a refused URL hides its password."""
    with pytest.raises(ConfigError) as refused:
        parse_sentinel_url("redis+sentinel://:hunter2@host:1/")
    assert "hunter2" not in str(refused.value)


async def test_every_client_kind_is_sentinel_managed() -> None:
    """The auto-pipelined, pooled, plain asyncio and sync clients of a Sentinel URL all find the master
    through the Sentinels (no connection is opened to build them)."""
    url = "redis+sentinel://127.0.0.1:1/mymaster/2"
    piped = async_client(url, max_connections=2, auto_pipeline=True)
    pooled = async_client(url, max_connections=2)
    plain = plain_async_client(url)
    synced = sync_client(url)
    try:
        assert isinstance(piped, AutoPipelineRedis)
        for client in (piped, pooled, plain):
            assert isinstance(client, aredis.Redis)
            assert isinstance(client.connection_pool, SentinelConnectionPool)
            assert client.connection_pool.connection_kwargs["db"] == 2
        assert isinstance(pooled.connection_pool, aredis.BlockingConnectionPool)
        assert isinstance(synced.connection_pool, SyncSentinelConnectionPool)
    finally:
        for client in (piped, pooled, plain):
            await client.aclose()
        synced.close()


def test_settings_refuse_a_malformed_sentinel_url() -> None:
    """A malformed ``redis+sentinel://`` URL in the settings is a ConfigError when they load, not when
    the first connection is made."""
    with pytest.raises(ConfigError, match="service_name"):
        load_settings(None, env={"REDIS_URL": "redis+sentinel://127.0.0.1:26379"})
    good = load_settings(None, env={"REDIS_URL": "redis+sentinel://127.0.0.1:26379/mymaster"})
    assert good.redis_url == "redis+sentinel://127.0.0.1:26379/mymaster"
