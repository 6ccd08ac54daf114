"""``python -m bench.run`` end to end: real processes, a results file and the markdown table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from bench.load_record import LoadResult
from bench.loadgen import LoadSpec, run_load
from bench.run import main
from bench.sim_payloads import expected_content
from tests.waiting import eventually


def read_results(out: Path) -> dict[str, Any]:
    (path,) = out.glob("*-test.json")
    document: dict[str, Any] = orjson.loads(path.read_bytes())
    return document


def test_direct_and_relay_suite_writes_results_and_table(tmp_path: Path, redis_url: str) -> None:
    """A subset runs its repeats against the upstream and the relay processes and writes both files."""
    argv = ["--quick", "--targets", "direct,relay", "--only", "nonstream_c16", "--only", "ttft_c1"]
    argv += ["--repeat", "2", "--duration", "0.3", "--name", "test", "--out", str(tmp_path)]
    argv += ["--redis-url", redis_url]  # the report names the Redis version: never ask the default Redis
    assert main(argv) == 0
    document = read_results(tmp_path)
    assert {(r["scenario"], r["target"], r["repeat"]) for r in document["runs"]} == {
        (name, target, repeat)
        for name in ("nonstream_c16", "ttft_c1")
        for target in ("direct", "relay")
        for repeat in (0, 1)
    }
    assert all(r["result"]["ok"] > 0 and not r["result"]["errors"] for r in document["runs"])
    assert all("upstream" in r["result"]["processes"] for r in document["runs"])
    relayed = [r for r in document["runs"] if r["target"] == "relay"]
    assert all(r["result"]["processes"]["relay"]["cpu_percent"] > 0 for r in relayed)
    assert document["machine"]["cores"] >= 1
    (ttft,) = [c for c in document["relay_comparison"] if c["name"].startswith("Time to first token")]
    assert ttft["aiorouter"] == "-" and " ms" in ttft["relay"]
    table = (tmp_path / "latest.md").read_text()
    assert "| time to first token, 1 client | direct |" in table
    assert "| time to first token, 1 client | relay |" in table
    assert "## Against the pass-through relay, same run" in table


def test_unknown_targets_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt target stops the suite before it starts anything, naming the targets there are."""
    with pytest.raises(SystemExit) as stopped:
        main(["--targets", "direct,relais"])
    assert stopped.value.code == 2
    assert "unknown targets relais; choose from direct, aiorouter, relay" in capsys.readouterr().err


@pytest.mark.redis
@pytest.mark.e2e
def test_aiorouter_suite_measures_through_ingress_and_worker(
    tmp_path: Path, redis_url: str, clean_redis: redis.Redis
) -> None:
    """Through AIOrouter from its CLI answers arrive whole, and its added TTFT is set beside the relay's."""
    argv = ["--quick", "--only", "ttft_c1", "--repeat", "1", "--duration", "0.5", "--name", "test"]
    argv += ["--redis-url", redis_url, "--out", str(tmp_path)]
    assert main(argv) == 0
    document = read_results(tmp_path)
    (ours,) = [r for r in document["runs"] if r["target"] == "aiorouter"]
    assert ours["result"]["ok"] > 0 and ours["result"]["errors"] == {}
    assert {"ingress", "worker-1", "upstream", "loadgen"} <= set(ours["result"]["processes"])
    (ttft,) = [t for t in document["targets"] if t["name"].startswith("Time to first token")]
    assert ttft["met"] is not None and " ms" in ttft["relay"]
    assert "## Against the pass-through relay, same run" in (tmp_path / "latest.md").read_text()


@pytest.mark.redis
@pytest.mark.e2e
def test_serve_mode_runs_the_system_until_told_to_stop(redis_url: str, clean_redis: redis.Redis) -> None:
    """``--serve`` keeps a working AIOrouter up and stops every child process on SIGTERM."""
    command = [sys.executable, "-m", "bench.run", "--serve", "1", "--redis-url", redis_url]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        lines = []
        while not (line := process.stdout.readline()).startswith("try:"):
            assert line, "bench.run --serve exited early"
            lines.append(line)
        (router_line,) = [line for line in lines if line.startswith("aiorouter")]
        words = router_line.split()
        base_url, key = words[1], words[3]
        pids = [int(word.split("=")[1]) for word in words[5:]]
        body = {"model": "bench/sim", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"authorization": f"Bearer {key}"}
        response = httpx.post(f"{base_url}/chat/completions", json=body, headers=headers)
        assert response.json()["choices"][0]["message"]["content"] == expected_content(16)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def exited(pid: int) -> bool:
    """The process ``pid`` has ended (a zombie until its parent reaps it, or gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def test_suite_stops_early_and_keeps_its_runs_when_a_process_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    """A process under test dying ends the suite with status 1, keeping and reporting what was measured."""
    import bench.run

    async def measure_then_kill_the_upstream(spec: LoadSpec) -> LoadResult:
        result = await run_load(spec)
        os.kill(spec.watch["upstream"], signal.SIGKILL)
        await eventually(lambda: exited(spec.watch["upstream"]))
        return result

    monkeypatch.setattr(bench.run, "run_load", measure_then_kill_the_upstream)
    argv = ["--quick", "--targets", "direct", "--only", "nonstream_c1", "--only", "nonstream_c16"]
    argv += ["--repeat", "1", "--duration", "0.3", "--name", "test", "--out", str(tmp_path)]
    argv += ["--redis-url", redis_url]
    assert main(argv) == 1
    document = read_results(tmp_path)
    assert [run["scenario"] for run in document["runs"]] == ["nonstream_c1"]
    assert document["config"]["aborted"].startswith("upstream exited")
    assert "**The suite stopped early**: upstream exited" in (tmp_path / "latest.md").read_text()
