"""The hot path's Redis client over TLS (``rediss://``) against a real redis-server listening with TLS,
and its off switch: plain redis-py when auto-pipelining is turned off."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aredis

from shared.autopipeline import AutoPipelineRedis
from shared.errors import ConfigError
from shared.redis_client import async_client
from tests.conftest import IN_CI


def _need(binary: str) -> None:
    if shutil.which(binary) is None:
        message = f"the {binary} command is needed for the TLS Redis tests"
        if IN_CI:
            pytest.fail(message + " (CI=true: they must run)")
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A private redis-server speaking only TLS, with a self-signed certificate for 127.0.0.1."""
    _need("openssl")
    _need("redis-server")
    folder = tmp_path_factory.mktemp("tls-redis")
    cert, key = folder / "cert.pem", folder / "key.pem"
    make_cert = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1".split()
    names = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        [*make_cert, *names, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True
    )
    port = _free_port()
    tls = ["--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    tls += ["--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
    server = subprocess.Popen(
        ["redis-server", "--port", "0", *tls, "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(cert))
        for _ in range(100):  # up within seconds; PING answers once it listens
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if server.poll() is not None:
                    pytest.fail("redis-server refused to start with TLS")
                time.sleep(0.05)
        client.close()
        yield port, cert
    finally:
        server.terminate()
        server.wait(timeout=10)


async def test_auto_pipelined_client_speaks_tls(tls_redis: tuple[int, Path]) -> None:
    """rediss:// with the server's CA: commands and a transaction go over TLS on the shared connection."""
    port, cert = tls_redis
    client = async_client(
        f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}", max_connections=2, auto_pipeline=True
    )
    try:
        assert isinstance(client, AutoPipelineRedis)
        await client.hset("h", mapping={"a": 1, "b": "x"})
        assert await client.hgetall("h") == {b"a": b"1", b"b": b"x"}
        async with client.pipeline(transaction=True) as pipe:
            pipe.incr("n")
            pipe.incr("n")
            assert await pipe.execute() == [1, 2]
    finally:
        await client.aclose()


async def test_tls_refuses_an_untrusted_server(tls_redis: tuple[int, Path]) -> None:
    """Without the server's CA the certificate check fails: a ConnectionError, never plain text."""
    port, _ = tls_redis
    client = async_client(f"rediss://127.0.0.1:{port}/0", max_connections=2, auto_pipeline=True)
    try:
        with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.ping()
    finally:
        await client.aclose()


async def test_off_switch_gives_plain_redis_py(clean_redis: redis.Redis, redis_url: str) -> None:
    """auto_pipeline=False is redis-py's own client, with the same replies."""
    client = async_client(redis_url, max_connections=2, auto_pipeline=False)
    try:
        assert type(client) is aredis.Redis
        await client.hset("h", mapping={"a": 1})
        assert await client.hgetall("h") == {b"a": b"1"}
    finally:
        await client.aclose()


def test_unknown_scheme_is_refused_clearly() -> None:
    """A URL scheme the auto-pipelined client cannot speak is a ConfigError naming the schemes."""
    with pytest.raises((ConfigError, ValueError)):
        async_client("memcached://127.0.0.1:11211/0", max_connections=1, auto_pipeline=True)
