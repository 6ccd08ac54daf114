"""rq's records as the worker writes them without rq's slow paths: :func:`workers.bookkeeping.adopt`
parses a queued job's times itself (rq's ``strptime`` is the slowest part of loading one) and must read
every field exactly as rq's own ``Job.restore`` does; the execution heartbeat is built directly and must
queue exactly what rq's ``Execution.heartbeat`` queues."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from rq.executions import Execution
from rq.job import Job
from rq.results import Result
from rq.utils import utcparse
from rq.worker.base import WorkerStatus

from shared.autopipeline import pack
from shared.jobs import enqueue_commands
from shared.rq_bridge import RECORDING_CLIENT, recorded, recording_pipeline
from shared.serialization import OrjsonSerializer
from tests.workers.conftest import worker_settings
from tests.workers.factories import completion_job
from workers import bookkeeping
from workers.worker import AsyncWorker


def queued_hash() -> dict[bytes, bytes]:
    """The job hash the ingress writes for one request, as HGETALL returns it."""
    (command, _), *_ = enqueue_commands(completion_job(), job_timeout=300, result_ttl=60, failure_ttl=3600)
    pairs = command[2:]
    return {_bytes(pairs[i]): _bytes(pairs[i + 1]) for i in range(0, len(pairs), 2)}


def _bytes(value: Any) -> bytes:
    value = getattr(value, "value", value)  # rq's JobStatus
    return value if isinstance(value, bytes) else str(value).encode()


def test_adopt_reads_a_job_as_rq_does() -> None:
    """Times, origin, timeout, TTLs, description and the call are rq's own reading of the hash."""
    raw = queued_hash()
    adopted = bookkeeping.adopt("job-1", dict(raw))
    reference = Job("job-1", connection=RECORDING_CLIENT, serializer=OrjsonSerializer)
    reference.restore(dict(raw))
    for field in (
        "created_at",
        "enqueued_at",
        "origin",
        "timeout",
        "result_ttl",
        "failure_ttl",
        "description",
    ):
        assert getattr(adopted, field) == getattr(reference, field), field
    assert adopted.created_at.tzinfo == reference.created_at.tzinfo
    assert adopted.data == reference.data and adopted.args == reference.args


@pytest.mark.parametrize("stamp", ["2026-12-06T14:49:46.775521Z", "2026-12-06T14:49:46Z"])
def test_parse_time_matches_rqs_utcparse(stamp: str) -> None:
    """Both timestamp forms rq writes parse to the same aware UTC datetime as rq's ``utcparse``."""
    parsed = bookkeeping.parse_time(stamp.encode())
    assert parsed == utcparse(stamp) and parsed.utcoffset() == utcparse(stamp).utcoffset()


def test_execution_beat_is_rqs_execution_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    """The heartbeat the worker builds for a running job queues exactly what rq's
    ``Execution.heartbeat`` queues for it (same clock), so rq's registries read it as rq's own."""
    import rq.executions
    import rq.registry

    clock = datetime(2026, 12, 6, 21, 30, 15, 123456, tzinfo=UTC)
    for module in (rq.executions, bookkeeping):
        monkeypatch.setattr(module, "now", lambda: clock)
    for module in (rq.registry, rq.executions, bookkeeping):
        if hasattr(module, "current_timestamp"):
            monkeypatch.setattr(module, "current_timestamp", lambda: int(clock.timestamp()))
    job = bookkeeping.adopt("job-1", queued_hash())
    execution = Execution(id="exec-1", job_id=job.id, connection=RECORDING_CLIENT)
    started = bookkeeping.StartedJob(job, execution)

    pipe = recording_pipeline()
    execution.heartbeat(job.started_job_registry, 8, pipeline=pipe)
    reference = recorded(pipe)

    assert bookkeeping.execution_beat_commands([started], execution_ttl=8) == reference
    assert execution.last_heartbeat == clock


CLOCK = datetime(2026, 12, 6, 21, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    """rq's clock and execution ids, and ours, stopped: two builds of the same records are comparable."""
    import rq.executions
    import rq.job
    import rq.registry

    for module in (rq.job, rq.executions, bookkeeping):
        monkeypatch.setattr(module, "now", lambda: CLOCK)
    for module in (rq.registry, rq.executions):
        monkeypatch.setattr(module, "current_timestamp", lambda: int(CLOCK.timestamp()))
    for module in (rq.executions, bookkeeping):
        monkeypatch.setattr(module, "uuid4", lambda: uuid.UUID(int=7))


@pytest.fixture
def worker(redis_url: str) -> AsyncWorker:
    """A worker whose bookkeeping is recorded, never sent (rq's constructor names its connection)."""
    return AsyncWorker(
        worker_settings(redis_url),
        pool="simulated",
        concurrency=4,
        connection=redis.Redis.from_url(redis_url),
    )


def packed(commands: list[Any]) -> list[bytes]:
    """Commands as the bytes sent to Redis (``1`` and ``1.0`` compare equal, but are not the same on the
    wire)."""
    return [pack(command) for command, _ in commands]


def rqs_start(worker: Any, job: Job, ttl: int) -> tuple[Execution, list[Any]]:
    """What rq's ``Worker.prepare_execution`` + ``prepare_job_execution`` queue, through rq's objects."""
    pipe = recording_pipeline()
    job.prepare_for_execution(worker.name, pipeline=pipe)
    pipe.persist(job.key)
    pipe.lrem(bookkeeping.job_queue_intermediate_key(job), 1, job.id)
    execution = Execution.create(job, ttl, pipeline=pipe, worker_name=worker.name)
    worker.set_state(WorkerStatus.BUSY, pipeline=pipe)
    return execution, recorded(pipe)


@pytest.mark.redis
@pytest.mark.usefixtures("frozen")
def test_start_is_rqs_prepare_execution(worker: AsyncWorker) -> None:
    """The start the worker builds queues exactly what rq's own start queues, and leaves the job and its
    execution as rq's leaves them."""
    ours, reference = bookkeeping.adopt("job-1", queued_hash()), bookkeeping.adopt("job-1", queued_hash())
    execution, commands = bookkeeping.start_commands(worker, ours, 10)
    rq_execution, rq_commands = rqs_start(worker, reference, 10)
    assert packed(commands) == packed(rq_commands)
    assert execution.serialize() == rq_execution.serialize() and execution.key == rq_execution.key
    for field in ("worker_name", "last_heartbeat", "started_at", "_status"):
        assert getattr(ours, field) == getattr(reference, field), field


@pytest.mark.redis
@pytest.mark.usefixtures("frozen")
@pytest.mark.parametrize("idle", [True, False])
@pytest.mark.parametrize("result", [{"finish_reason": "stop"}, None, {"tokens": 2**70}])
def test_success_is_rqs_handle_job_success(worker: AsyncWorker, idle: bool, result: Any) -> None:
    """A finished job's records, built from the keys, are exactly what rq's objects queue (result,
    registries, executions, the worker's counts and state), idle or not, with or without a result, and
    with rq's placeholder for a result the serializer refuses (an integer beyond 64 bits)."""
    job = bookkeeping.adopt("job-1", queued_hash())
    execution, _ = bookkeeping.start_commands(worker, job, 10)
    started = bookkeeping.StartedJob(job, execution)
    ttl = job.get_result_ttl(worker.default_result_ttl)
    assert ttl > 0
    reference = bookkeeping._success_commands_by_rq(worker, started, result, ttl, idle=idle)
    assert packed(bookkeeping.success_commands(worker, started, result, idle=idle)) == packed(reference)


@pytest.mark.redis
@pytest.mark.usefixtures("frozen")
@pytest.mark.parametrize("result_ttl", [0, -1])
def test_a_result_kept_for_ever_or_not_at_all_goes_through_rq(worker: AsyncWorker, result_ttl: int) -> None:
    """A result TTL of 0 (deleted at once) or -1 (kept) is rq's own path: the job's hash deleted, or no
    expiry set."""
    job = bookkeeping.adopt("job-1", queued_hash())
    job.result_ttl = result_ttl
    execution, _ = bookkeeping.start_commands(worker, job, 10)
    commands = bookkeeping.success_commands(worker, bookkeeping.StartedJob(job, execution), {}, idle=False)
    names = [command[0] for command, _ in commands]
    if result_ttl == 0:
        assert ("DEL", job.key, Result.get_key(job.id)) in [command for command, _ in commands]
    else:
        assert ("PERSIST", Result.get_key(job.id)) in [command for command, _ in commands]
        assert "EXPIRE" not in names


async def test_redis_lost_while_a_job_starts_is_a_warning_not_a_bug(
    worker: AsyncWorker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis failing while a job starts or ends is an outage the log says in one line, not a traceback
    reported as a bug of the worker's bookkeeping; the job's slot is freed either way."""
    import logging

    from redis.exceptions import ConnectionError as RedisConnectionError

    from workers.worker import _Run

    async def lost(run: object, adapter: object) -> None:
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(worker, "_execute_job", lost)
    caplog.set_level(logging.WARNING)
    worker._runs["job-1"] = run = _Run("job-1", "rq:queue:simulated")
    await worker._run(run, None)  # type: ignore[arg-type]
    [line] = [r for r in caplog.records if "job-1" in r.getMessage()]
    assert line.levelno == logging.WARNING and line.exc_info is None and "Redis failed" in line.getMessage()
    assert "job-1" not in worker._runs
