"""SIGTERM to an ingress whose Redis is frozen (SIGSTOP): it still exits within the grace plus 10 s (deploy/
gives it the grace plus 15 s), and its open requests, streams and JSON alike, end with ingress_stopping, or
with their own error when they had one already, never with a bare 500."""

from __future__ import annotations

import math
import os
import signal
import socket
import threading
import time
import tomllib

import orjson
import pytest

from ingress.shutdown import CANCEL_AFTER
from shared import events, keys
from shared.autopipeline import REPLY_TIMEOUT
from shared.settings import settings_from_mapping
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

STALL_GRACE = 4.0  # uvicorn cancels what still runs ceil(STALL_GRACE + CANCEL_AFTER) s after SIGTERM
STALL_CONFIG = f"""
queue_timeout = 60.0
stream_stall_timeout = 1.0
job_timeout = 1
ingress_shutdown_grace = {STALL_GRACE}

[providers.slow]
kind = "simulated"
tokens_per_second = 10.0
retries = 0
timeouts = {{ connect = 0.25, first_token = 0.75, idle = 0.75 }}

[[models]]
id = "chaos/slow"
input_price_per_m = 1.0
output_price_per_m = 1.0
deployments = [{{ provider = "slow", upstream_model = "lorem" }}]
"""


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


def _watch_starts(server: PrivateRedis, started: threading.Event, listening: threading.Event) -> None:
    """Set ``listening`` once subscribed to every reply channel, then ``started`` at the first S frame a
    worker publishes (the ingress reads it at the same moment)."""
    client = server.client()
    pubsub = client.pubsub()
    pubsub.psubscribe(keys.reply_channel("*"))
    try:
        while not started.is_set():
            message = pubsub.get_message(timeout=0.1)
            if message is None:
                continue
            if message["type"] == "psubscribe":
                listening.set()
            elif message["type"] == "pmessage":
                frames = [events.decode(frame) for frame in events.frames_of(message["data"])]
                if any(frame.kind == events.START for frame in frames):
                    started.set()
    finally:
        pubsub.close()
        client.close()


@pytest.mark.timeout(120)
def test_sigterm_with_redis_frozen_answers_a_request_already_cleaning_up_with_its_error_not_a_500(
    launch_chaos_system: SystemLauncher, private_redis: PrivateRedis
) -> None:
    """A started JSON request, Redis frozen, SIGTERM: the request stalls inside the grace and its job's
    cancel waits on the frozen Redis when the grace ends; that wait is cut short, so the client gets its
    503 response_stalled, not the bare 500 of uvicorn's cancel (which comes before Redis' reply timeout)."""
    settings = settings_from_mapping(tomllib.loads(STALL_CONFIG), env={})
    stalls_after = settings.stall_timeout("slow") + settings.job_timeout  # a started JSON job's budget
    # The plan: the stall comes a second or more before the grace ends, and uvicorn's cancel (this long
    # after SIGTERM) a second or more before Redis' reply timeout could fail the job's cancel (no sooner
    # than REPLY_TIMEOUT after the freeze, which SIGTERM follows at once).
    assert stalls_after + 1 <= STALL_GRACE
    assert math.ceil(STALL_GRACE + CANCEL_AFTER) + 1 <= REPLY_TIMEOUT
    system = launch_chaos_system(STALL_CONFIG, pools=["slow"], concurrency=SLOTS)
    add_credit(private_redis, "e2e", 10)
    started, listening = threading.Event(), threading.Event()
    watcher = threading.Thread(target=_watch_starts, args=(private_redis, started, listening), daemon=True)
    watcher.start()
    assert listening.wait(10)
    call = Call(LONG_TOKENS, stream=False)
    _start(system, [call])
    assert started.wait(CLIENT_TIMEOUT), system.logs()
    private_redis.freeze()  # nothing more reaches the ingress: its request stalls after stalls_after
    try:
        assert _sigterm_and_wait(system) <= STALL_GRACE + EXIT_AFTER_GRACE, system.logs()
        assert call.ended.wait(5)
        assert (call.status, call.error_code) == (503, "response_stalled"), system.logs()
    finally:
        private_redis.thaw()


ADMIT_GRACE = 2.0  # uvicorn cancels what still runs ceil(ADMIT_GRACE + CANCEL_AFTER) s after SIGTERM
ADMIT_CONFIG = STALL_CONFIG.replace(
    f"ingress_shutdown_grace = {STALL_GRACE}", f"ingress_shutdown_grace = {ADMIT_GRACE}"
)


def _read_by(pid: int, client: socket.socket) -> bool:
    """Whether process ``pid`` holds the server end of ``client``'s connection with nothing left unread
    in it: it accepted the connection and read the request."""
    client_port = client.getsockname()[1]
    with open("/proc/net/tcp") as table:
        for row in table.readlines()[1:]:
            fields = row.split()
            remote_port = int(fields[2].split(":")[1], 16)
            if remote_port != client_port:
                continue
            unread = int(fields[4].split(":")[1], 16)
            held = f"socket:[{fields[9]}]" in {
                os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")
            }
            return held and unread == 0
    return False


@pytest.mark.timeout(120)
def test_sigterm_with_redis_frozen_answers_a_request_still_in_admission_503_not_500(
    launch_chaos_system: SystemLauncher, private_redis: PrivateRedis
) -> None:
    """A request whose admission waits on a frozen Redis through the whole grace: the shutdown's refusal
    cannot reach it there, so uvicorn's cancel does (before Redis' reply timeout could), and the client
    gets 503 ingress_stopping, not uvicorn's bare 500."""
    assert math.ceil(ADMIT_GRACE + CANCEL_AFTER) + 1 <= REPLY_TIMEOUT
    system = launch_chaos_system(ADMIT_CONFIG, pools=["slow"], concurrency=SLOTS)
    add_credit(private_redis, "e2e", 10)
    warm = Call(1, stream=False)  # authenticates the key: the next request's first Redis call is admission
    _start(system, [warm])
    assert warm.ended.wait(CLIENT_TIMEOUT) and warm.finished, system.logs()
    body = orjson.dumps(
        {"model": "chaos/slow", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    )
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {system.api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    ingress = _ingress(system)
    private_redis.freeze()
    try:
        with socket.create_connection(("127.0.0.1", system.port), timeout=CLIENT_TIMEOUT) as client:
            client.sendall(head.encode() + body)
            wait_until(lambda: _read_by(ingress.process.pid, client), within=10, every=0.01)
            assert _sigterm_and_wait(system) <= ADMIT_GRACE + EXIT_AFTER_GRACE, system.logs()
            answer = b""
            while chunk := client.recv(65536):
                answer += chunk
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 503 Service Unavailable", (answer, system.logs())
        assert orjson.loads(rest.partition(b"\r\n\r\n")[2])["error"]["code"] == "ingress_stopping"
        assert ingress.process.returncode == 0, system.logs()  # a graceful stop still
    finally:
        private_redis.thaw()
