"""bench/timeline.py: a request walked back from its answer through the processes that held it, from a
tcpdump capture; segments off the request's way are left out."""

from __future__ import annotations

import os
import socket

import pytest

from bench import timeline
from bench.timeline import CLIENT, Hold, Segment, parse_capture, request_chains, socket_owners, summarize

FRONT, REDIS, UPSTREAM = 8080, 6379, 9000
INGRESS_TO_REDIS, WORKER_BLOCKING, WORKER_WRITES, WORKER_TO_UPSTREAM, CLIENT_PORT = (
    5001,
    5002,
    5003,
    5004,
    5005,
)
OWNERS = {
    FRONT: "ingress",
    INGRESS_TO_REDIS: "ingress",
    REDIS: "redis",
    WORKER_BLOCKING: "worker",
    WORKER_WRITES: "worker",
    WORKER_TO_UPSTREAM: "worker",
    UPSTREAM: "upstream",
}


def _line(at_us: int, source: int, target: int, size: int) -> str:
    return f"1700000000.{at_us:06d} IP 127.0.0.1.{source} > 127.0.0.1.{target}: tcp {size}"


def _one_request(start_us: int) -> list[str]:
    """One JSON request through ingress, Redis and worker, with the segments nobody waits for."""
    t = start_us
    return [
        _line(t, CLIENT_PORT, FRONT, 280),  # the request
        _line(t + 200, INGRESS_TO_REDIS, REDIS, 2207),  # admission and enqueue
        _line(t + 330, REDIS, WORKER_BLOCKING, 1475),  # the job, to the blocked move
        _line(t + 340, REDIS, INGRESS_TO_REDIS, 103),  # the admission's reply: off the way
        _line(t + 500, WORKER_TO_UPSTREAM, UPSTREAM, 359),  # the upstream call
        _line(t + 560, WORKER_BLOCKING, REDIS, 300),  # the worker's next move: off the way
        _line(t + 600, UPSTREAM, WORKER_TO_UPSTREAM, 401),  # the answer's head
        _line(t + 610, UPSTREAM, WORKER_TO_UPSTREAM, 4376),  # and body
        _line(t + 850, WORKER_WRITES, REDIS, 5393),  # the final frame
        _line(t + 940, REDIS, INGRESS_TO_REDIS, 773),  # published to the ingress
        _line(t + 950, REDIS, WORKER_WRITES, 109),  # the transaction's reply: off the way
        _line(t + 1050, FRONT, CLIENT_PORT, 902),  # the answer
        _line(t + 1060, WORKER_WRITES, REDIS, 4332),  # rq's bookkeeping: off the way
    ]


def test_capture_lines_become_segments_and_empty_ones_are_dropped() -> None:
    lines = [
        "tcpdump: verbose output suppressed",
        _line(1, 5000, 6000, 12),
        _line(2, 6000, 5000, 0),
        "1700000000.000003 IP6 ::1.5000 > ::1.6000: tcp 5",
    ]

    assert parse_capture(lines) == [Segment(1700000000.000001, 5000, 6000, 12)]


def test_a_request_is_walked_back_through_every_process_it_crossed_and_nothing_else() -> None:
    segments = parse_capture([*_one_request(0), *_one_request(1200)])

    [chain] = request_chains(segments, FRONT, OWNERS)

    walked = [(hold.process, hold.received, hold.sent_to, round(hold.seconds * 1e6)) for hold in chain]
    assert walked == [
        ("ingress", CLIENT, "redis", 200),
        ("redis", "ingress", "worker", 130),
        ("worker", "redis", "upstream", 170),
        ("upstream", "worker", "worker", 110),
        ("worker", "upstream", "redis", 240),
        ("redis", "worker", "ingress", 90),
        ("ingress", "redis", CLIENT, 110),
        (CLIENT, "ingress", "ingress", 150),  # the answer at 1050, the next request at 1200
    ]


def test_a_request_whose_holder_received_nothing_since_it_is_not_walked() -> None:
    lines = [
        _line(0, CLIENT_PORT, FRONT, 100),
        _line(100, WORKER_WRITES, REDIS, 50),  # the worker sends, having received nothing
        _line(200, REDIS, INGRESS_TO_REDIS, 60),
        _line(300, FRONT, CLIENT_PORT, 70),
        _line(400, CLIENT_PORT, FRONT, 100),
    ]

    assert request_chains(parse_capture(lines), FRONT, OWNERS) == []


def test_the_summary_adds_a_process_s_holds_and_takes_medians() -> None:
    def chain(ingress_us: float, redis_us: float) -> list[Hold]:
        return [
            Hold("ingress", ingress_us / 1e6, CLIENT, "redis"),
            Hold("redis", redis_us / 1e6, "ingress", "ingress"),
            Hold("ingress", ingress_us / 1e6, "redis", CLIENT),
        ]

    other = [Hold("ingress", 5e-6, CLIENT, CLIENT)]

    summary = summarize([chain(10, 40), chain(20, 50), chain(30, 60), other])

    assert summary.requests == 4
    assert summary.per_process_us == {"ingress": 30.0, "redis": 50.0}  # of 5, 20, 40, 60; of 40, 50, 60
    assert summary.cycle_us == 75.0  # of 5, 60, 90, 120
    assert summary.chain_share == 0.75
    assert [hop.us for hop in summary.chain] == [20.0, 50.0, 20.0]


def test_socket_owners_finds_the_local_ports_of_a_process_s_sockets() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        with client, accepted:
            owners = socket_owners({"me": os.getpid()})

            assert owners[server.getsockname()[1]] == "me"
            assert owners[client.getsockname()[1]] == "me"


def test_without_tcpdump_it_says_why_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)

    assert timeline.main(["--redis-url", "redis://127.0.0.1:1/0"]) == 2
    assert "needs tcpdump" in capsys.readouterr().err
