"""A batch whose stored results the storage lost still accounts for every line in its files: each line
whose result is in no stored part is an error line ``result_lost`` naming its ``custom_id``, and the
batch's counts are its files' lines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aredis

from ingress.batches import files, records
from ingress.batches.batch_run import part_key
from ingress.batches.driver import BatchDriver
from ingress.batches.finalize import finalize
from ingress.batches.storage import LocalStorage, read_all
from ingress.open_set import OpenSetCache
from ingress.routing import ModelRouter
from shared import batch_lines, keys
from shared.batch_lines import LineRef
from shared.breaker import CircuitBreaker
from shared.errors import InvalidRequest, NotFound
from shared.jobs import CompletionJob
from shared.settings import BatchSettings
from tests.ingress.conftest import MODEL, Ingress
from tests.ingress.fake_worker import FakeWorker, completion_object

pytestmark = pytest.mark.redis

LINES = 4


def _input() -> bytes:
    lines = [
        {
            "custom_id": f"req-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": f"line {n}"}]},
        }
        for n in range(LINES)
    ]
    return b"\n".join(orjson.dumps(line) for line in lines) + b"\n"


async def _answer(ingress: Ingress, job: CompletionJob) -> None:
    """Record the job's result as a worker does: an even line is answered, an odd one refused (400)."""
    ref = LineRef.from_extra(job.extra)
    assert ref is not None
    if ref.line % 2 == 0:
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        body = completion_object(job, f"answer {ref.line}", usage)
        call = batch_lines.record_call(
            ref,
            batch_lines.OUTPUT,
            batch_lines.response_line(ref, job.request_id, 200, body),
            job_id=job.request_id,
        )
    else:
        refused = InvalidRequest("The upstream refused this request.").envelope()
        call = batch_lines.record_call(
            ref,
            batch_lines.ERROR,
            batch_lines.response_line(ref, job.request_id, 400, refused),
            job_id=job.request_id,
        )
    assert await call.run(ingress.redis) == 1


async def _jsonl(ingress: Ingress, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    response = await ingress.client.get(f"/v1/files/{file_id}/content", headers=ingress.headers())
    assert response.status_code == 200, response.text
    return [orjson.loads(line) for line in response.content.splitlines()]


async def test_the_lines_of_a_result_part_the_storage_lost_end_in_the_error_file_as_result_lost(
    files_ingress: Ingress,
) -> None:
    """Two lines' results are collected into a part the storage then loses; the other two end normally.
    Read through the API, the output file holds the answered line still stored, the error file the
    refused one and one ``result_lost`` line (OpenAI's error-line shape) for each lost line by its
    custom_id, every custom_id appears once, and request_counts are the files' lines."""
    ingress = files_ingress
    auth = {"Authorization": f"Bearer {ingress.api_key}"}
    uploaded = await ingress.client.post(
        "/v1/files", headers=auth, files={"file": ("in.jsonl", _input())}, data={"purpose": "batch"}
    )
    assert uploaded.status_code == 200, uploaded.text
    created = await ingress.client.post(
        "/v1/batches",
        headers=auth,
        json={
            "input_file_id": uploaded.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    batch_id = created.json()["id"]
    settings = ingress.settings
    storage = LocalStorage(settings.batches.storage_dir)  # the directory the app stores files in
    router = ModelRouter(
        settings.models,
        redis=ingress.redis,
        open_set=OpenSetCache(CircuitBreaker(ingress.redis, settings.breaker)),
    )
    driver = BatchDriver(settings, ingress.redis, storage, router, "test-driver")
    lane = FakeWorker(ingress.redis, ingress.worker.sync, pool=keys.batch_lane("simulated"))

    await driver.round()  # validates the batch
    await driver.round()  # dispatches its lines into the lane
    jobs = sorted(
        [(await lane.take()).job for _ in range(LINES)], key=lambda job: job.extra["batch_line"]["line"]
    )
    for job in jobs[:2]:
        await _answer(ingress, job)
    await driver.round()  # collects lines 0 and 1 into part 0
    assert await storage.get(part_key(batch_id, 0))
    await storage.delete(part_key(batch_id, 0))  # the storage loses it
    with pytest.raises(NotFound):
        await storage.get(part_key(batch_id, 0))
    for job in jobs[2:]:
        await _answer(ingress, job)
    await driver.round()  # collects lines 2 and 3, and finalizes

    batch = (await ingress.client.get(f"/v1/batches/{batch_id}", headers=auth)).json()
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": LINES, "completed": 1, "failed": 3}
    output = await _jsonl(ingress, batch.get("output_file_id"))
    errors = await _jsonl(ingress, batch.get("error_file_id"))
    assert [line["custom_id"] for line in output] == ["req-2"]
    assert output[0]["response"]["status_code"] == 200 and output[0]["error"] is None
    by_id = {line["custom_id"]: line for line in errors}
    assert sorted(line["custom_id"] for line in output + errors) == [f"req-{n}" for n in range(LINES)]
    assert by_id["req-3"]["response"]["status_code"] == 400 and by_id["req-3"]["error"] is None
    for lost in ("req-0", "req-1"):
        line = by_id[lost]
        assert set(line) == {"id", "custom_id", "response", "error"}
        assert line["id"].startswith("batch_req_") and line["response"] is None
        assert line["error"]["code"] == "result_lost"
        assert "lost" in line["error"]["message"] and "twice" in line["error"]["message"]


class ReadsRecorded(LocalStorage):
    """Local storage that records which keys were read, and how."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.streamed: list[str] = []
        self.got: list[str] = []

    def stream(self, key: str) -> AsyncIterator[bytes]:
        self.streamed.append(key)
        return super().stream(key)

    async def get(self, key: str) -> bytes:
        self.got.append(key)
        return await read_all(LocalStorage(self.root), key)


async def _chunks(content: bytes) -> AsyncIterator[bytes]:
    yield content


async def _running_batch(
    redis: aredis.Redis, storage: LocalStorage, parts: dict[int, bytes]
) -> records.BatchRecord:
    """An in_progress batch of :data:`LINES` lines (custom ids ``req-0``...) whose results are in
    ``parts`` (each stored, by its number), counted as collecting them counts them."""
    stored = await files.store_file(
        redis,
        storage,
        account_id="a",
        filename="in.jsonl",
        purpose="batch",
        chunks=_chunks(_input()),
        ttl=3600,
    )
    batch = await records.create_batch(
        redis,
        account_id="a",
        input_file_id=stored.id,
        input_bytes=stored.size,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        window_seconds=86_400,
        metadata=None,
    )
    for number, content in parts.items():
        await storage.put(part_key(batch.id, number), _chunks(content))
    rows = b"".join(parts.values()).splitlines()
    completed = sum(1 for row in rows if row.startswith(batch_lines.OUTPUT))
    counts = {"completed": completed, "failed": len(rows) - completed}
    assert await records.transition(
        redis, batch.id, ("validating",), "in_progress", parts=len(parts), total=LINES, **counts
    )
    running = await records.load_batch(redis, batch.id)
    assert running is not None
    return running


async def _file_lines(redis: aredis.Redis, storage: LocalStorage, file_id: str) -> list[dict[str, Any]]:
    record = await files.get_file(redis, file_id, "a")
    return [orjson.loads(line) for line in (await storage.get(record.storage_key)).splitlines()]


async def test_lost_lines_whose_input_is_lost_too_are_named_by_number(
    aredis_client: aredis.Redis, tmp_path: Path
) -> None:
    """The storage lost a result part and the input as well: the lines of that part still end in the
    error file as result_lost, with an empty custom_id (it cannot be read) and their line's id, and
    the batch counts them failed."""
    storage = LocalStorage(tmp_path)
    part_0 = b'O0 {"custom_id": "req-0"}\n'
    running = await _running_batch(aredis_client, storage, {0: part_0, 1: b'E1 {"custom_id": "req-1"}\n'})
    await storage.delete(part_key(running.id, 1))
    await storage.delete(files.storage_key(running.fields["input_file_id"]))
    await finalize(aredis_client, storage, running, "", BatchSettings())
    ended = await records.load_batch(aredis_client, running.id)
    assert ended is not None and ended.status == "completed"
    assert ended.to_json()["request_counts"] == {"total": LINES, "completed": 1, "failed": LINES - 1}
    assert await _file_lines(aredis_client, storage, ended.fields["output_file_id"]) == [
        {"custom_id": "req-0"}
    ]
    errors = await _file_lines(aredis_client, storage, ended.fields["error_file_id"])
    assert [line["id"] for line in errors] == [f"batch_req_{running.id}_{n}" for n in range(1, LINES)]
    assert all(line["custom_id"] == "" and line["error"]["code"] == "result_lost" for line in errors)


async def test_finalizing_reads_the_input_only_when_a_result_is_lost_and_then_as_a_stream(
    aredis_client: aredis.Redis, tmp_path: Path
) -> None:
    """A batch with every result stored never opens its input; one with a lost result streams it once
    (never reads it whole) to name the lost line."""
    storage = ReadsRecorded(tmp_path)
    every = b"".join(b'O%d {"custom_id": "req-%d"}\n' % (n, n) for n in range(LINES))
    whole = await _running_batch(aredis_client, storage, {0: every})
    input_key = files.storage_key(whole.fields["input_file_id"])
    await finalize(aredis_client, storage, whole, "", BatchSettings())
    assert input_key not in storage.streamed + storage.got

    first_lost = await _running_batch(aredis_client, storage, {0: every.split(b"\n", 1)[1]})
    input_key = files.storage_key(first_lost.fields["input_file_id"])
    await finalize(aredis_client, storage, first_lost, "", BatchSettings())
    assert storage.streamed.count(input_key) == 1 and input_key not in storage.got
    ended = await records.load_batch(aredis_client, first_lost.id)
    assert ended is not None
    errors = await _file_lines(aredis_client, storage, ended.fields["error_file_id"])
    assert [(line["custom_id"], line["error"]["code"]) for line in errors] == [("req-0", "result_lost")]
