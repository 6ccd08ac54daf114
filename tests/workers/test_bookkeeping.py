"""rq's records as the worker writes them without rq's slow paths: :func:`workers.bookkeeping.adopt`
parses a queued job's times itself (rq's ``strptime`` is the slowest part of loading one) and must read
every field exactly as rq's own ``Job.restore`` does; the execution heartbeat is built directly and must
queue exactly what rq's ``Execution.heartbeat`` queues."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from rq.executions import Execution
from rq.job import Job
from rq.utils import utcparse

from shared.jobs import enqueue_commands
from shared.rq_bridge import RECORDING_CLIENT, recorded, recording_pipeline
from shared.serialization import OrjsonSerializer
from tests.workers.factories import completion_job
from workers import bookkeeping


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
