"""The embedded fakeredis server answers the way rq and our Lua helpers need a Redis to."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from cli.embedded_redis import embedded_redis


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    with embedded_redis() as url:
        connection = redis.Redis.from_url(url)
        yield connection
        connection.close()


def test_client_info_parses(client: redis.Redis) -> None:
    """CLIENT INFO reports addr as host:port, which redis-py (and so rq's worker registration) can parse."""
    client.client_setname("worker-1")
    host, _, port = str(client.client_info()["addr"]).rpartition(":")
    assert host == "127.0.0.1" and port.isdigit()


def test_error_reply_keeps_the_connection(client: redis.Redis) -> None:
    """An error reply leaves the connection open, so EVALSHA's NOSCRIPT fallback to SCRIPT LOAD works."""
    client.rpush("a-list", "x")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        client.get("a-list")
    with pytest.raises(redis.exceptions.NoScriptError):
        client.evalsha("0" * 40, 0)
    script = client.register_script("return redis.call('SET', KEYS[1], ARGV[1])")
    assert script(keys=["k"], args=["v"]) == b"OK" and client.get("k") == b"v"


def test_pubsub_crosses_connections(client: redis.Redis) -> None:
    """A message published on one connection reaches a subscriber on another (the reply channel path)."""
    subscriber = client.pubsub()
    subscriber.subscribe("channel")
    assert subscriber.get_message(timeout=1)["type"] == "subscribe"
    assert client.publish("channel", b"frame") == 1
    message = subscriber.get_message(timeout=1)
    assert message is not None and message["data"] == b"frame"
    subscriber.close()
