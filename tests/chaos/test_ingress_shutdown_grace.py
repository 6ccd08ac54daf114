"""SIGTERM to an ingress serving streams and queued requests, as in a rolling restart: those that end
within ``ingress_shutdown_grace`` finish, the rest end with a clean ``ingress_stopping`` error (an error
event on a stream, a 503 otherwise), the process exits within the grace plus a few seconds, and no credit
stays held nor job queued.  A second SIGTERM ends the grace at once."""

from __future__ import annotations

import signal
import socket
import threading
import time
from dataclasses import dataclass, field

import openai
import pytest

from shared import keys
from tests.chaos.configs import slow_model_config
from tests.chaos.conftest import PrivateRedis, add_credit, balance, wait_until
from tests.e2e.running_system import RunningSystem, Service, SystemLauncher

GRACE = 6.0
CONFIG = slow_model_config(
    f"""
worker_heartbeat_interval = 0.5
worker_dead_after = 3.0
queue_timeout = 60.0
ingress_shutdown_grace = {GRACE}
""",
    output_price=1.0,
)
SLOTS = 4  # the worker runs four jobs; a fifth waits in the queue
SHORT_TOKENS = 30  # 3 s at 10 tokens/s: ends within the grace
LONG_TOKENS = 600  # 60 s: far outlives the grace
EXIT_AFTER_GRACE = 10.0  # the process exits within the grace plus this (CANCEL_AFTER and the clean-up)
CLIENT_TIMEOUT = 90.0


@dataclass
class Call:
    tokens: int
    stream: bool = True
    first_chunk: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    finished: bool = False
    status: int | None = None
    error_code: str | None = None


def _call(system: RunningSystem, call: Call) -> None:
    client = system.client(timeout=CLIENT_TIMEOUT)
    try:
        arguments = {
            "model": "chaos/slow",
            "messages": [{"role": "user", "content": "Write at length."}],
            "max_tokens": call.tokens,
        }
        if call.stream:
            for _ in client.chat.completions.create(stream=True, **arguments):  # type: ignore[call-overload]
                call.first_chunk.set()
        else:
            client.chat.completions.create(**arguments)  # type: ignore[call-overload]
        call.finished = True
    except openai.APIError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        call.error_code = str(body.get("code"))
        call.status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
    finally:
        call.ended.set()


def _start(system: RunningSystem, calls: list[Call]) -> None:
    for call in calls:
        threading.Thread(target=_call, args=(system, call), daemon=True).start()


def _ingress(system: RunningSystem) -> Service:
    (ingress,) = [service for service in system.services if service.label == "ingress"]
    return ingress


def _refuses_connections(system: RunningSystem) -> bool:
    try:
        socket.create_connection(("127.0.0.1", system.port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def _queued(private_redis: PrivateRedis) -> int:
    return int(private_redis.client().llen(keys.rq_queue_key("slow")))


def streaming_and_one_queued(system: RunningSystem, private_redis: PrivateRedis, streams: list[Call]) -> Call:
    """Start ``streams`` (every slot), wait for each one's first chunk, then start a JSON request and wait
    until it waits in the queue; that request."""
    _start(system, streams)
    for call in streams:
        assert call.first_chunk.wait(CLIENT_TIMEOUT), system.logs()
    queued = Call(LONG_TOKENS, stream=False)
    _start(system, [queued])
    assert wait_until(lambda: _queued(private_redis) == 1, within=20), system.logs()
    return queued


@pytest.mark.timeout(180)
def test_sigterm_lets_requests_within_the_grace_finish_and_ends_the_rest_cleanly(
    launch_chaos_system: SystemLauncher, private_redis: PrivateRedis
) -> None:
    """With a 6 s grace: 3 s streams running at SIGTERM finish with [DONE]; 60 s streams end with an
    ingress_stopping error event and a queued JSON request with 503 ingress_stopping, all at the grace's
    end; the ingress refuses connections at once and exits within the grace plus 10 s; afterwards no
    credit is held and the queued job is gone, never run."""
    system = launch_chaos_system(CONFIG, pools=["slow"], concurrency=SLOTS)
    add_credit(private_redis, "e2e", 10)
    streams = [Call(SHORT_TOKENS), Call(SHORT_TOKENS), Call(LONG_TOKENS), Call(LONG_TOKENS)]
    queued = streaming_and_one_queued(system, private_redis, streams)

    ingress = _ingress(system)
    signalled = time.monotonic()
    ingress.process.send_signal(signal.SIGTERM)
    assert wait_until(lambda: _refuses_connections(system), within=5, every=0.05)
    ingress.process.wait(GRACE + EXIT_AFTER_GRACE)
    exited_after = time.monotonic() - signalled
    for call in [*streams, queued]:
        assert call.ended.wait(5), system.logs()

    outcomes = [(call.finished, call.error_code) for call in streams]
    assert outcomes == [(True, None)] * 2 + [(False, "ingress_stopping")] * 2, system.logs()
    assert (queued.status, queued.error_code) == (503, "ingress_stopping"), system.logs()
    assert GRACE - 1 <= exited_after <= GRACE + EXIT_AFTER_GRACE, exited_after
    assert ingress.process.returncode == 0, ingress.log_text()  # a stop by signal is a normal exit
    assert "ended 3 open request(s) with ingress_stopping" in ingress.log_text()
    assert wait_until(lambda: balance(private_redis, "e2e").reserved == 0, within=10), balance(
        private_redis, "e2e"
    )
    assert _queued(private_redis) == 0
    assert wait_until(lambda: not system.started_jobs("slow"), within=10), system.started_jobs("slow")


@pytest.mark.timeout(120)
def test_a_second_sigterm_ends_the_open_streams_at_once(
    launch_chaos_system: SystemLauncher, private_redis: PrivateRedis
) -> None:
    """With a 60 s grace, a second SIGTERM ends the running streams with an ingress_stopping error event
    and the process exits within seconds, holding no credit."""
    system = launch_chaos_system(CONFIG.replace(f"= {GRACE}", "= 60.0"), pools=["slow"], concurrency=SLOTS)
    add_credit(private_redis, "e2e", 10)
    streams = [Call(LONG_TOKENS) for _ in range(2)]
    _start(system, streams)
    for call in streams:
        assert call.first_chunk.wait(CLIENT_TIMEOUT), system.logs()

    ingress = _ingress(system)
    ingress.process.send_signal(signal.SIGTERM)
    assert wait_until(lambda: _refuses_connections(system), within=5, every=0.05)
    signalled = time.monotonic()
    ingress.process.send_signal(signal.SIGTERM)
    ingress.process.wait(EXIT_AFTER_GRACE)
    assert time.monotonic() - signalled <= EXIT_AFTER_GRACE
    assert ingress.process.returncode == 0, ingress.log_text()
    for call in streams:
        assert call.ended.wait(5), system.logs()
    assert [(call.finished, call.error_code) for call in streams] == [(False, "ingress_stopping")] * 2
    assert wait_until(lambda: balance(private_redis, "e2e").reserved == 0, within=10), balance(
        private_redis, "e2e"
    )
