"""SIGTERM to an ingress whose Redis is frozen (SIGSTOP): it still exits within the grace plus 10 s (deploy/
gives it the grace plus 15 s), and its open requests, streams and JSON alike, end with ingress_stopping."""

from __future__ import annotations

import signal
import time

import pytest

from tests.chaos.conftest import PrivateRedis, add_credit, wait_until
from tests.chaos.test_ingress_shutdown_grace import (
    CLIENT_TIMEOUT,
    CONFIG,
    EXIT_AFTER_GRACE,
    GRACE,
    LONG_TOKENS,
    SLOTS,
    Call,
    _ingress,
    _start,
    streaming_and_one_queued,
)
from tests.e2e.running_system import RunningSystem, SystemLauncher


def _sigterm_and_wait(system: RunningSystem) -> float:
    """SIGTERM the ingress; seconds until it exited (at most the grace plus 40 s)."""
    ingress = _ingress(system)
    signalled = time.monotonic()
    ingress.process.send_signal(signal.SIGTERM)
    wait_until(lambda: ingress.process.poll() is not None, within=GRACE + 40, every=0.1)
    return time.monotonic() - signalled


@pytest.mark.timeout(120)
def test_sigterm_with_redis_frozen_ends_the_streams_and_exits_within_the_bound(
    launch_chaos_system: SystemLauncher, private_redis: PrivateRedis
) -> None:
    """Two endless streams, Redis frozen, SIGTERM: both end with an ingress_stopping error event and the
    process exits within the grace plus 10 s."""
    system = launch_chaos_system(CONFIG, pools=["slow"], concurrency=SLOTS)
    add_credit(private_redis, "e2e", 10)
    streams = [Call(LONG_TOKENS) for _ in range(2)]
    _start(system, streams)
    for call in streams:
        assert call.first_chunk.wait(CLIENT_TIMEOUT), system.logs()
    private_redis.freeze()
    try:
        assert _sigterm_and_wait(system) <= GRACE + EXIT_AFTER_GRACE, system.logs()
        for call in streams:
            assert call.ended.wait(5)
        assert [call.error_code for call in streams] == ["ingress_stopping"] * 2, system.logs()
    finally:
        private_redis.thaw()


@pytest.mark.timeout(120)
def test_sigterm_with_redis_frozen_answers_a_queued_json_request_503(
    launch_chaos_system: SystemLauncher, private_redis: PrivateRedis
) -> None:
    """A JSON request queued behind full slots, Redis frozen, SIGTERM: it gets 503 ingress_stopping, its
    withdraw and hold release no longer holding the answer past uvicorn's cancel (they wait at most
    HURRIED_WAIT, then go on behind it)."""
    system = launch_chaos_system(CONFIG, pools=["slow"], concurrency=SLOTS)
    add_credit(private_redis, "e2e", 10)
    streams = [Call(LONG_TOKENS) for _ in range(SLOTS)]
    queued = streaming_and_one_queued(system, private_redis, streams)
    private_redis.freeze()
    try:
        assert _sigterm_and_wait(system) <= GRACE + EXIT_AFTER_GRACE, system.logs()
        assert queued.ended.wait(5)
        assert (queued.status, queued.error_code) == (503, "ingress_stopping"), system.logs()
    finally:
        private_redis.thaw()
