"""Files expire: past expires_at a file reads as gone, and the sweep deletes its content and record."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aredis

from ingress.batches import files, records
from ingress.batches.batch_run import part_key
from ingress.batches.finalize import finalize
from ingress.batches.storage import LocalStorage
from shared import keys
from shared.errors import NotFound
from shared.settings import settings_from_mapping

pytestmark = pytest.mark.redis


async def _content() -> AsyncIterator[bytes]:
    yield b"data\n"


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


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


async def _finished_batch(
    redis: aredis.Redis, storage: LocalStorage, output_expires_after: int | None
) -> records.BatchRecord:
    """A batch whose two lines ran (one answered, one refused), finalized; its record then."""
    batch = await records.create_batch(
        redis,
        account_id="a",
        input_file_id="file-x",
        input_bytes=1,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        window_seconds=86_400,
        metadata=None,
        output_expires_after=output_expires_after,
    )
    await storage.put(part_key(batch.id, 0), _chunks(b'O0 {"custom_id": "a"}\nE1 {"custom_id": "b"}\n'))
    await redis.hset(keys.batch_record(batch.id), mapping={"status": "in_progress", "parts": 1, "total": 2})
    running = await records.load_batch(redis, batch.id)
    assert running is not None
    await finalize(redis, storage, running, "", settings_from_mapping({}, env={}).batches)
    done = await records.load_batch(redis, batch.id)
    assert done is not None and done.status == "completed"
    return done


async def test_a_batchs_result_files_expire_as_its_output_expires_after_asks(
    aredis_client: aredis.Redis, tmp_path: Path
) -> None:
    """The output and the error file of a batch created with output_expires_after expire that many
    seconds after their creation; without it, file_ttl after."""
    storage = LocalStorage(tmp_path)
    for asked, lifetime in ((3600, 3600), (None, settings_from_mapping({}, env={}).batches.file_ttl)):
        done = await _finished_batch(aredis_client, storage, asked)
        ids = [done.fields["output_file_id"], done.fields["error_file_id"]]
        results = await files.load_files(aredis_client, ids)
        assert [r.expires_at - r.created_at if r else None for r in results] == [lifetime, lifetime]
        for file_id, result in zip(ids, results, strict=True):
            assert result is not None
            assert await aredis_client.zscore(keys.FILES_EXPIRY, file_id) == result.expires_at
