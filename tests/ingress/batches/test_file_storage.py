"""The file storage interface, over both backends: a local directory, and S3 spoken over a socket to
moto's standalone S3-compatible server."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from ingress.batches.s3_storage import S3Storage
from ingress.batches.storage import FileStorage, LocalStorage, open_storage, read_all
from shared.errors import NotFound, StorageUnavailable
from shared.settings import BatchSettings

BUCKET = "aiorouter-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port, with one bucket."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    client.create_bucket(Bucket=BUCKET)
    client.close()
    yield endpoint
    server.stop()


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")


@pytest.fixture(params=["local", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FileStorage]:
    if request.param == "local":
        backend: FileStorage = LocalStorage(tmp_path / "files")
    else:
        request.getfixturevalue("aws_credentials")
        endpoint = request.getfixturevalue("s3_endpoint")
        settings = BatchSettings(
            storage="s3", s3_bucket=BUCKET, s3_endpoint_url=endpoint, s3_region="us-east-1",
            s3_prefix=f"t-{tmp_path.name}/",
        )  # fmt: skip
        backend = open_storage(settings)
        assert isinstance(backend, S3Storage)
    yield backend
    await backend.aclose()


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_put_then_stream_returns_the_same_bytes(storage: FileStorage) -> None:
    """An object written from chunks reads back byte for byte, and put reports its size."""
    data = [b"x" * 700_000, b"y" * 900_000, b"\n"]
    written = await storage.put("files/file-1", _chunks(*data))
    assert written == sum(map(len, data))
    assert await read_all(storage, "files/file-1") == b"".join(data)
    assert await storage.get("files/file-1") == b"".join(data)


async def test_put_replaces_an_existing_object(storage: FileStorage) -> None:
    """A second put under the same key replaces the object whole."""
    await storage.put("k", _chunks(b"first version"))
    await storage.put("k", _chunks(b"second"))
    assert await storage.get("k") == b"second"


async def test_missing_object_is_not_found(storage: FileStorage) -> None:
    """Reading an object that does not exist raises NotFound, never a store-specific error."""
    with pytest.raises(NotFound):
        await storage.get("nothing/here")


async def test_delete_removes_and_is_idempotent(storage: FileStorage) -> None:
    """After delete the object is gone; deleting it again is no error."""
    await storage.put("gone", _chunks(b"data"))
    await storage.delete("gone")
    await storage.delete("gone")
    with pytest.raises(NotFound):
        await storage.get("gone")


async def test_a_failed_put_leaves_no_object(storage: FileStorage) -> None:
    """A put whose chunks fail half-way stores nothing under the key."""

    async def broken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        await storage.put("half", broken())
    with pytest.raises(NotFound):
        await storage.get("half")


def test_keys_cannot_escape_the_store(tmp_path: Path) -> None:
    """Keys with '..' or absolute paths are refused before touching the disk."""
    store = LocalStorage(tmp_path)
    for key in ("../x", "/etc/passwd", "a//b", "a/./b"):
        with pytest.raises(ValueError):
            store._path(key)


async def test_unreachable_s3_is_storage_unavailable(aws_credentials: None) -> None:
    """An S3 endpoint nobody listens on surfaces as StorageUnavailable (503), not a botocore error."""
    endpoint = f"http://127.0.0.1:{_free_port()}"
    settings = BatchSettings(storage="s3", s3_bucket=BUCKET, s3_endpoint_url=endpoint, s3_region="us-east-1")
    store = open_storage(settings)
    with pytest.raises(StorageUnavailable):
        await store.get("x")
    await store.aclose()
