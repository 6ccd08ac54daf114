"""Parsing stop requests: the ingress' cancel broadcast and rq's own worker commands."""

from __future__ import annotations

import orjson

from shared import keys
from workers.stop_requests import StopRequest, parse

WORKER_CHANNEL = "rq:pubsub:w1"


def test_cancel_broadcast_names_the_job() -> None:
    """A message on the cancel channel asks to stop the job whose id it carries."""
    assert parse(keys.CANCEL_CHANNEL.encode(), b"job-1") == StopRequest("job-1")
    assert parse(keys.CANCEL_CHANNEL, b"") is None


def test_rq_commands_map_to_job_or_worker_stops() -> None:
    """rq's stop-job/stop-execution stop one job; shutdown stops the worker; others are ignored."""
    stop_job = orjson.dumps({"command": "stop-job", "job_id": "j2"})
    stop_execution = orjson.dumps({"command": "stop-execution", "job_id": "j3", "execution_id": "e"})
    assert parse(WORKER_CHANNEL, stop_job) == StopRequest("j2")
    assert parse(WORKER_CHANNEL, stop_execution) == StopRequest("j3")
    assert parse(WORKER_CHANNEL, orjson.dumps({"command": "shutdown"})) == StopRequest(None)
    assert parse(WORKER_CHANNEL, orjson.dumps({"command": "kill-horse"})) is None
    assert parse(WORKER_CHANNEL, orjson.dumps({"command": "stop-job"})) is None


def test_garbage_is_ignored() -> None:
    """Messages that are not JSON objects are not requests."""
    assert parse(WORKER_CHANNEL, b"not json") is None
    assert parse(WORKER_CHANNEL, b"[1, 2]") is None
