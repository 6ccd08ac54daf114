"""The S3-compatible backend of :class:`~ingress.batches.storage.FileStorage`, on boto3.

boto3 is synchronous: each call runs in a worker thread.  Storage calls are per file and per batch part,
never per request, so a thread hop costs nothing that matters.  Credentials come from boto3's usual chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile, an instance role).  A put spools its chunks
to a temporary file (in memory up to :data:`SPOOL_BYTES`) and hands it to s3transfer, which uploads large
objects in parts.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ingress.batches.storage import CHUNK_BYTES, check_key, read_all
from shared.errors import NotFound, StorageUnavailable
from shared.settings import BatchSettings

SPOOL_BYTES = 8 * 1024 * 1024
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})


class S3Storage:
    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix

    @classmethod
    def from_settings(cls, settings: BatchSettings) -> S3Storage:
        client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url or None,
            region_name=settings.s3_region or None,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}),
        )
        return cls(client, settings.s3_bucket, settings.s3_prefix)

    def _key(self, key: str) -> str:
        return self._prefix + check_key(key)

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        name = self._key(key)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            written = 0
            async for chunk in chunks:
                await asyncio.to_thread(spool.write, chunk)
                written += len(chunk)
            spool.seek(0)
            try:
                await asyncio.to_thread(self._client.upload_fileobj, spool, self._bucket, name)
            except (BotoCoreError, ClientError) as exc:
                raise StorageUnavailable(f"Cannot write to the object store: {exc}.") from exc
        return written

    async def stream(self, key: str) -> AsyncIterator[bytes]:
        try:
            reply = await asyncio.to_thread(self._client.get_object, Bucket=self._bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise NotFound("The file's content is no longer stored.") from None
            raise StorageUnavailable(f"Cannot read from the object store: {exc}.") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"Cannot read from the object store: {exc}.") from exc
        body = reply["Body"]
        try:
            while chunk := await asyncio.to_thread(body.read, CHUNK_BYTES):
                yield chunk
        except (BotoCoreError, ClientError, OSError) as exc:
            raise StorageUnavailable(f"Cannot read from the object store: {exc}.") from exc
        finally:
            body.close()

    async def get(self, key: str) -> bytes:
        return await read_all(self, key)

    async def delete(self, key: str) -> None:
        try:
            await asyncio.to_thread(self._client.delete_object, Bucket=self._bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable(f"Cannot delete from the object store: {exc}.") from exc

    async def aclose(self) -> None:
        await asyncio.to_thread(self._client.close)
