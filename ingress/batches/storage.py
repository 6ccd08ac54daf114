"""Where file contents live: one small interface, :class:`FileStorage`, with two backends.

- :class:`LocalStorage`: a directory on this machine (the default; ``aiorouter dev`` uses a private one).
- :class:`~ingress.batches.s3_storage.S3Storage`: any S3-compatible object store (AWS S3, MinIO, R2), for
  deployments of several hosts.

Contents are written whole or not at all (a reader never sees half an object) and streamed both ways in
chunks, so a 200 MB file never sits in memory.  The stores' own errors become
:class:`~shared.errors.StorageUnavailable` (and a missing object :class:`~shared.errors.NotFound`) here.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Protocol

from shared.errors import NotFound, StorageUnavailable
from shared.settings import BatchSettings

CHUNK_BYTES = 1024 * 1024
_KEY_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._/-]*$")


class FileStorage(Protocol):
    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Store the concatenated ``chunks`` under ``key`` (replacing any object there); bytes written."""
        ...

    def stream(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes in chunks; :class:`NotFound` when there is none."""
        ...

    async def get(self, key: str) -> bytes:
        """The whole object (for small ones)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; no error if there is none."""
        ...

    async def aclose(self) -> None: ...


def check_key(key: str) -> str:
    """A storage key: path-like, with no empty, ``.`` or ``..`` part."""
    if not _KEY_RE.match(key) or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"invalid storage key {key!r}")
    return key


async def read_all(storage: FileStorage, key: str) -> bytes:
    return b"".join([chunk async for chunk in storage.stream(key)])


class LocalStorage:
    """Objects as files under one directory; a put writes a temporary file and renames it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        path = self._path(key)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.part")
        try:
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
            handle = await asyncio.to_thread(temporary.open, "wb")
        except OSError as exc:
            raise StorageUnavailable(f"Cannot write to the file store: {exc.strerror}.") from exc
        written = 0
        try:
            try:
                async for chunk in chunks:
                    await asyncio.to_thread(handle.write, chunk)
                    written += len(chunk)
            finally:
                await asyncio.to_thread(handle.close)
            await asyncio.to_thread(os.replace, temporary, path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise StorageUnavailable(f"Cannot write to the file store: {exc.strerror}.") from exc
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return written

    async def stream(self, key: str) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise NotFound("The file's content is no longer stored.") from None
        except OSError as exc:
            raise StorageUnavailable(f"Cannot read from the file store: {exc.strerror}.") from exc
        try:
            while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
                yield chunk
        except OSError as exc:
            raise StorageUnavailable(f"Cannot read from the file store: {exc.strerror}.") from exc
        finally:
            handle.close()

    async def get(self, key: str) -> bytes:
        return await read_all(self, key)

    async def delete(self, key: str) -> None:
        try:
            await asyncio.to_thread(self._path(key).unlink, missing_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"Cannot delete from the file store: {exc.strerror}.") from exc

    async def aclose(self) -> None:
        return None


def open_storage(settings: BatchSettings) -> FileStorage:
    """The backend the settings name."""
    if settings.storage == "s3":
        from ingress.batches.s3_storage import S3Storage  # boto3 loads only where it is used

        return S3Storage.from_settings(settings)
    return LocalStorage(settings.storage_dir)
