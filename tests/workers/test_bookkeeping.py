"""rq's record of a job as the worker loads it: :func:`workers.bookkeeping.adopt` parses a queued job's
times itself (rq's ``strptime`` is the slowest part of loading one) and must read every field exactly as
rq's own ``Job.restore`` does."""

from __future__ import annotations

from typing import Any

import pytest
from rq.job import Job
from rq.utils import utcparse

from shared.jobs import enqueue_commands
from shared.rq_bridge import RECORDING_CLIENT
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
