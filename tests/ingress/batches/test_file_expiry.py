"""Files expire: past expires_at a file reads as gone, and the sweep deletes its content and record."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aredis

from ingress.batches import files
from ingress.batches.storage import LocalStorage
from shared import keys
from shared.errors import NotFound

pytestmark = pytest.mark.redis


async def _content() -> AsyncIterator[bytes]:
    yield b"data\n"


async def test_an_expired_file_is_gone_and_swept(aredis_client: aredis.Redis, tmp_path: Path) -> None:
    """A file past its expiry answers 404 at once; the sweep removes its content and record, and leaves
    a live file alone."""
    storage = LocalStorage(tmp_path)
    old = await files.store_file(
        aredis_client, storage, account_id="a", filename="old", purpose="batch", chunks=_content(), ttl=-1
    )
    live = await files.store_file(
        aredis_client, storage, account_id="a", filename="new", purpose="batch", chunks=_content(), ttl=3600
    )
    with pytest.raises(NotFound):
        await files.get_file(aredis_client, old.id, "a")
    assert await files.sweep_expired(aredis_client, storage) == 1
    assert not await aredis_client.exists(keys.file_record(old.id))
    with pytest.raises(NotFound):
        await storage.get(old.storage_key)
    assert (await files.get_file(aredis_client, live.id, "a")).id == live.id
    assert await storage.get(live.storage_key) == b"data\n"
