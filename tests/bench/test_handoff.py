"""The hand-off probe of the benchmark report: round trips to a real Redis, and no figure from a server
that is not one to measure."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from bench.handoff import measure_handoff
from bench.markdown_table import render

MACHINE = {"date": "d", "cpu": "c", "cores": 2, "kernel": "k", "python": "p", "redis": "r", "commit": "x"}
CONFIG: dict[str, Any] = {
    "repeat": 1,
    "warmup_s": 1.0,
    "duration_s": 5.0,
    "slow_repeat": 1,
    "slow_stream_s": 30.0,
}
CONFIG |= {"command": "python -m bench.run"}


def test_round_trips_to_a_real_redis_are_measured(redis_url: str) -> None:
    """Against a running Redis each figure is a measured, positive time in microseconds."""
    handoff = measure_handoff(redis_url, samples=20)
    assert handoff is not None
    assert set(handoff) == {"idle_round_trip_us", "busy_round_trip_us", "idle_write_cpu_us"}
    assert all(value > 0 for value in handoff.values())


@pytest.fixture
def refusing_server() -> Iterator[int]:
    """A server that answers every command as a Redis wanting a password does."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                while conn.recv(64):
                    conn.sendall(b"-NOAUTH Authentication required.\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    thread.join(timeout=5)


def test_no_figure_without_a_redis_that_answers(refusing_server: int) -> None:
    """Nothing listening, or a Redis that refuses PING: no figure, rather than a wrong one."""
    with socket.create_server(("127.0.0.1", 0)) as closed:
        free_port = closed.getsockname()[1]
    assert measure_handoff(f"redis://127.0.0.1:{free_port}/0", samples=5) is None
    assert measure_handoff(f"redis://127.0.0.1:{refusing_server}/0", samples=5) is None


def test_the_machine_line_carries_the_handoff_when_measured() -> None:
    """The report states the hand-off's cost under the machine line, and says nothing when unmeasured."""
    figures = {"idle_round_trip_us": 53.94, "busy_round_trip_us": 8.0, "idle_write_cpu_us": 22.3}
    page = render(MACHINE | {"handoff": figures}, CONFIG, [], [])
    assert (
        "A round trip to the idle Redis over loopback (`bench/handoff.py`): 53.9 µs, against 8.0 µs" in page
    )
    assert "costs the writer 22.3 µs of CPU." in page
    assert "round trip to the idle Redis" not in render(MACHINE | {"handoff": None}, CONFIG, [], [])
    assert "round trip to the idle Redis" not in render(MACHINE, CONFIG, [], [])
