"""The simulated upstream from sync code: the thread helper and the multi-process CLI."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from bench.upstream import UpstreamThread


def test_thread_helper_serves_sync_clients() -> None:
    """``UpstreamThread`` serves a sync client and exposes the counters and base URL."""
    with UpstreamThread() as upstream:
        assert upstream.base_url == f"http://127.0.0.1:{upstream.port}/v1"
        response = httpx.post(f"{upstream.base_url}/chat/completions", json={"model": "sim?tokens=2"})
        assert response.json()["choices"][0]["message"]["content"] == "w0 w1 "
        assert upstream.stats.completed == 1
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{upstream.base_url}/models")


@pytest.fixture
def cli_upstream() -> Iterator[str]:
    command = [sys.executable, "-m", "bench.upstream", "--port", "0", "--workers", "2"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("listening on "), line
            yield line.removeprefix("listening on ").strip()
        finally:
            process.terminate()
            process.wait(timeout=10)


def test_cli_workers_share_one_stats_table(cli_upstream: str) -> None:
    """With ``--workers 2`` every process answers and ``/stats`` sums the counters of both."""
    root = cli_upstream.removesuffix("/v1")
    httpx.post(f"{root}/stats/reset")
    for _ in range(20):
        with httpx.Client() as fresh_connection:
            body = {"model": "sim?tokens=3", "stream": True}
            response = fresh_connection.post(f"{cli_upstream}/chat/completions", json=body)
            assert response.text.endswith("data: [DONE]\n\n")
    stats = httpx.get(f"{root}/stats").json()
    assert (stats["requests"], stats["streams"], stats["completed"]) == (20, 20, 20)
    assert len(stats["requests_by_process"]) == 2
    assert all(count > 0 for count in stats["requests_by_process"])


def test_thread_helper_reports_a_port_already_taken() -> None:
    """Starting on a port that is in use raises instead of hanging."""
    with UpstreamThread() as first, pytest.raises(RuntimeError, match="did not start"):
        UpstreamThread(port=first.port).start()
