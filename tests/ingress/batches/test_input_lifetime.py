"""A batch's input outlives a delete of its file while the batch runs: the record goes at once (404),
the content stays until the last batch reading it ends, whichever of the two comes first.  A batch whose
input content is lost anyway ends with its unread lines failed (``input_file_missing``), and a line that
fails validation when it is dispatched keeps its ``custom_id``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aredis

from ingress.batches import files, records
from ingress.batches.batch_run import BatchRun, part_key
from ingress.batches.finalize import cleanup, finalize
from ingress.batches.input_lines import BatchLine, LineError, parse_line
from ingress.batches.storage import LocalStorage
from ingress.batches.wind_down import INPUT_FILE_MISSING, wind_down
from shared import keys
from shared.errors import NotFound
from shared.settings import BatchSettings, ModelEntry

pytestmark = pytest.mark.redis

MODELS = {"m": ModelEntry(id="m", deployments=())}


def line(custom_id: str, model: str = "m") -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return orjson.dumps(
        {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    )


async def _chunks(content: bytes) -> AsyncIterator[bytes]:
    yield content


async def uploaded(redis: aredis.Redis, storage: LocalStorage, content: bytes) -> files.FileRecord:
    return await files.store_file(
        redis,
        storage,
        account_id="a",
        filename="in.jsonl",
        purpose="batch",
        chunks=_chunks(content),
        ttl=3600,
    )


async def new_batch(redis: aredis.Redis, file_id: str) -> records.BatchRecord:
    (stored,) = await files.load_files(redis, [file_id])
    return await records.create_batch(
        redis,
        account_id="a",
        input_file_id=file_id,
        input_bytes=0 if stored is None else stored.size,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        window_seconds=86_400,
        metadata=None,
    )


async def test_deleting_a_running_batchs_input_keeps_its_content_until_the_batch_ends(
    aredis_client: aredis.Redis, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path)
    stored = await uploaded(aredis_client, storage, line("x") + b"\n")
    batch = await new_batch(aredis_client, stored.id)
    await files.delete_file(aredis_client, storage, stored)
    with pytest.raises(NotFound):
        await files.get_file(aredis_client, stored.id, "a")  # gone for clients at once
    assert await storage.get(stored.storage_key) == line("x") + b"\n"  # still there for the batch
    await cleanup(aredis_client, storage, batch)
    with pytest.raises(NotFound):
        await storage.get(stored.storage_key)
    await cleanup(aredis_client, storage, batch)  # a driver repeating it after a crash: no harm


async def test_a_file_deleted_after_its_batches_ended_loses_its_content_then(
    aredis_client: aredis.Redis, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path)
    stored = await uploaded(aredis_client, storage, line("x") + b"\n")
    first, second = await new_batch(aredis_client, stored.id), await new_batch(aredis_client, stored.id)
    await cleanup(aredis_client, storage, first)
    await cleanup(aredis_client, storage, second)
    assert await storage.get(stored.storage_key)  # the file itself was never deleted
    assert await aredis_client.ttl(keys.file_batches(stored.id)) == -2  # nothing left behind
    await files.delete_file(aredis_client, storage, stored)
    with pytest.raises(NotFound):
        await storage.get(stored.storage_key)


async def test_content_shared_by_two_batches_goes_with_the_last_of_them(
    aredis_client: aredis.Redis, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path)
    stored = await uploaded(aredis_client, storage, line("x") + b"\n")
    first, second = await new_batch(aredis_client, stored.id), await new_batch(aredis_client, stored.id)
    assert 0 < await aredis_client.ttl(keys.file_batches(stored.id)) <= keys.FILE_BATCHES_TTL
    await files.delete_file(aredis_client, storage, stored)
    await cleanup(aredis_client, storage, first)
    assert await storage.get(stored.storage_key)
    await cleanup(aredis_client, storage, second)
    with pytest.raises(NotFound):
        await storage.get(stored.storage_key)


async def test_a_batch_whose_input_content_was_lost_fails_its_unread_lines(
    aredis_client: aredis.Redis, tmp_path: Path
) -> None:
    """The storage lost the content: reading the next line marks the run, and winding it down fails every
    line not yet read (without their custom_id, which cannot be read) instead of failing the driver."""
    storage = LocalStorage(tmp_path)
    stored = await uploaded(aredis_client, storage, b"\n".join(line(f"c{n}") for n in range(3)))
    batch = await new_batch(aredis_client, stored.id)
    await aredis_client.hset(keys.batch_record(batch.id), mapping={"status": "in_progress", "total": 3})
    loaded = await records.load_batch(aredis_client, batch.id)
    assert loaded is not None
    run = await BatchRun.load(aredis_client, loaded, stored.storage_key)
    first = await run.next_line(storage, MODELS)
    assert isinstance(first, BatchLine) and first.custom_id == "c0"
    run.consume()
    await storage.delete(stored.storage_key)
    run.reader = None  # as after a driver restart: the next read opens the content again
    assert await run.next_line(storage, MODELS) is None and run.input_missing
    run.record = records.BatchRecord({**run.record.fields, "ending": INPUT_FILE_MISSING})
    await wind_down(aredis_client, run, storage, MODELS)
    assert run.cursor == 3
    results = await aredis_client.hgetall(keys.batch_results(batch.id))
    assert sorted(int(k) for k in results) == [1, 2]
    for value in results.values():
        error = orjson.loads(value[1:])
        assert error["custom_id"] == "" and error["error"]["code"] == INPUT_FILE_MISSING


def test_a_line_refused_after_its_custom_id_was_read_names_it() -> None:
    """A line that no longer validates (its model left the catalog) keeps its custom_id in its error,
    and its 1-based line number."""
    with pytest.raises(LineError) as refused:
        parse_line(
            line("keep-me", model="gone"), index=4, number=7, endpoint="/v1/chat/completions", models=MODELS
        )
    assert refused.value.custom_id == "keep-me" and refused.value.line == 7
    assert refused.value.code == "model_not_found"
    with pytest.raises(LineError) as unnamed:
        parse_line(b'{"custom_id": 5}', index=0, number=1, endpoint="/v1/chat/completions", models=MODELS)
    assert unnamed.value.custom_id == ""


async def test_a_batch_the_driver_loads_holds_its_input_even_if_created_before_the_hold(
    aredis_client: aredis.Redis, tmp_path: Path
) -> None:
    """A running batch the driver (re)loads is made a reader of its input (a batch created before the
    hold existed, or whose set expired), so deleting the file afterwards keeps the content; a finished
    record without an input file id is cleaned up without failing the round."""
    from typing import Any

    from ingress.batches.driver import BatchDriver
    from shared.settings import settings_from_mapping

    storage = LocalStorage(tmp_path)
    stored = await uploaded(aredis_client, storage, line("x") + b"\n")
    batch = await new_batch(aredis_client, stored.id)
    await aredis_client.delete(keys.file_batches(stored.id))  # as before the hold existed
    await aredis_client.hset(keys.batch_record(batch.id), mapping={"status": "in_progress", "total": 1})
    unused: Any = None
    driver = BatchDriver(settings_from_mapping({}, env={}), aredis_client, storage, unused, "d")
    await driver._load()
    assert await aredis_client.smembers(keys.file_batches(stored.id)) == {batch.id.encode()}
    await files.delete_file(aredis_client, storage, stored)
    assert await storage.get(stored.storage_key)
    fields = {k: v for k, v in batch.fields.items() if k != "input_file_id"}
    await cleanup(aredis_client, storage, records.BatchRecord(fields))


async def test_a_batch_whose_content_is_lost_before_validation_fails_with_input_file_missing(
    aredis_client: aredis.Redis, tmp_path: Path
) -> None:
    """The storage lost a new batch's input (its file record is still there): the batch fails
    validation with input_file_missing instead of failing the driver's round."""
    from ingress.batches.validate_batch import validate_batch
    from shared.settings import settings_from_mapping

    storage = LocalStorage(tmp_path)
    stored = await uploaded(aredis_client, storage, line("x") + b"\n")
    batch = await new_batch(aredis_client, stored.id)
    await storage.delete(stored.storage_key)
    assert await validate_batch(aredis_client, storage, settings_from_mapping({}, env={}), batch) is False
    failed = await records.load_batch(aredis_client, batch.id)
    assert failed is not None and failed.status == "failed"
    assert orjson.loads(failed.fields["errors"])[0]["code"] == "input_file_missing"


async def test_deleting_a_validating_batchs_input_keeps_the_batch_going(
    aredis_client: aredis.Redis, tmp_path: Path
) -> None:
    """The input file deleted before the driver validated its batch: the batch validates the content it
    holds and starts (in_progress), the content stays until it ends, and the file is 404 for clients."""
    from ingress.batches.validate_batch import validate_batch
    from shared.settings import settings_from_mapping

    storage = LocalStorage(tmp_path)
    content = line("x", model="aiorouter/echo") + b"\n" + line("y", model="aiorouter/echo") + b"\n"
    stored = await uploaded(aredis_client, storage, content)
    batch = await new_batch(aredis_client, stored.id)
    await files.delete_file(aredis_client, storage, stored)
    assert await validate_batch(aredis_client, storage, settings_from_mapping({}, env={}), batch) is True
    started = await records.load_batch(aredis_client, batch.id)
    assert started is not None and started.status == "in_progress" and started.number("total") == 2
    assert await storage.get(stored.storage_key) == content
    with pytest.raises(NotFound):
        await files.get_file(aredis_client, stored.id, "a")
    await cleanup(aredis_client, storage, started)
    with pytest.raises(NotFound):
        await storage.get(stored.storage_key)


async def test_a_validating_batch_keeps_the_size_bound_of_its_deleted_input(
    aredis_client: aredis.Redis, tmp_path: Path
) -> None:
    """The size the batch recorded as it was created still bounds its input once the file is deleted."""
    from ingress.batches.validate_batch import validate_batch
    from shared.settings import settings_from_mapping

    storage = LocalStorage(tmp_path)
    stored = await uploaded(aredis_client, storage, line("x") * 4 + b"\n")
    batch = await new_batch(aredis_client, stored.id)
    await files.delete_file(aredis_client, storage, stored)
    raw = {"batches": {"max_file_bytes": stored.size - 1}}
    assert await validate_batch(aredis_client, storage, settings_from_mapping(raw, env={}), batch) is False
    failed = await records.load_batch(aredis_client, batch.id)
    assert failed is not None and orjson.loads(failed.fields["errors"])[0]["code"] == "file_too_large"


async def test_a_deletion_cut_between_the_record_and_the_content_is_finished_by_the_sweep(
    aredis_client: aredis.Redis, tmp_path: Path
) -> None:
    """The record went, the content's delete failed (or the process died before it): the driver's
    sweep deletes the content once the deletion is a minute old; content a batch still reads stays,
    and goes when that batch ends."""
    from shared.errors import StorageUnavailable

    class FailingDelete(LocalStorage):
        async def delete(self, key: str) -> None:
            raise StorageUnavailable("down")

    storage = LocalStorage(tmp_path)
    lone = await uploaded(aredis_client, storage, line("x") + b"\n")
    read = await uploaded(aredis_client, storage, line("y") + b"\n")
    batch = await new_batch(aredis_client, read.id)
    with pytest.raises(StorageUnavailable):
        await files.delete_file(aredis_client, FailingDelete(tmp_path), lone)
    await files.delete_file(aredis_client, storage, read)  # kept for its batch
    await files.sweep_expired(aredis_client, storage)  # too early: a delete may still be under way
    assert await storage.get(lone.storage_key)
    await files.sweep_expired(aredis_client, storage, now=time.time() + keys.FILES_DELETING_GRACE + 1)
    with pytest.raises(NotFound):
        await storage.get(lone.storage_key)
    assert await storage.get(read.storage_key)  # its batch still reads it
    assert await aredis_client.zcard(keys.FILES_DELETING) == 0
    await cleanup(aredis_client, storage, batch)
    with pytest.raises(NotFound):
        await storage.get(read.storage_key)
    assert await aredis_client.zcard(keys.FILES_DELETING) == 0


async def test_a_batch_whose_result_part_the_storage_lost_still_ends_with_the_results_kept(
    aredis_client: aredis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A result part gone from the storage does not keep the batch (nor, through it, its driver's other
    batches) from ending: it ends with what the other parts hold, the lines of the lost part in its
    error file as ``result_lost``, and the loss is logged as an error."""
    storage = LocalStorage(tmp_path)
    stored = await uploaded(aredis_client, storage, line("a") + b"\n" + line("b") + b"\n")
    batch = await new_batch(aredis_client, stored.id)
    assert await records.transition(aredis_client, batch.id, ("validating",), "in_progress", parts=2, total=2)
    await storage.put(part_key(batch.id, 0), _chunks(b'O0 {"custom_id": "a"}\n'))  # part 1 never came back
    (running,) = await records.load_batches(aredis_client, [batch.id])
    assert running is not None
    await finalize(aredis_client, storage, running, "", BatchSettings())
    (ended,) = await records.load_batches(aredis_client, [batch.id])
    assert ended is not None and ended.status == "completed"
    output = await files.get_file(aredis_client, ended.fields["output_file_id"], "a")
    assert await storage.get(output.storage_key) == b'{"custom_id": "a"}\n'
    error = await files.get_file(aredis_client, ended.fields["error_file_id"], "a")
    (lost,) = [orjson.loads(row) for row in (await storage.get(error.storage_key)).splitlines()]
    assert (lost["custom_id"], lost["error"]["code"]) == ("b", "result_lost")
    assert any("result part 1 is no longer stored" in r.getMessage() for r in caplog.records)
