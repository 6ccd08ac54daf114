"""`aiorouter dev` as a first-time user runs it: one command, a working key, and a clean stop."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import orjson
import pytest
import redis

from tests.e2e.running_system import REPO

READY_WITHIN = 60.0
STOP_WITHIN = 20.0


@dataclass
class DevRun:
    process: subprocess.Popen[str]
    lines: queue.Queue[str]
    output: list[str]
    workdir: Path

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            if text in line:
                return
        pytest.fail(f"`aiorouter dev` never printed {text!r}:\n{''.join(self.output)}")

    def banner_value(self, label: str) -> str:
        line = next(line for line in self.output if line.strip().startswith(label))
        return line.split()[-1]

    def children(self) -> dict[int, str]:
        """Child pid -> command line, from /proc."""
        pid = self.process.pid
        listed = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return {int(child): _cmdline(int(child)) for child in listed}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.fixture
def dev(clean_redis: redis.Redis, redis_url: str, tmp_path: Path) -> Iterator[DevRun]:
    """`aiorouter dev --port 0` on the test Redis database, run in ``tmp_path``, its output collected
    line by line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "dev", "--port", "0"],
        env={**os.environ, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run = DevRun(process, queue.Queue(), [], tmp_path)

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            run.output.append(line)
            run.lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        yield run
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_WITHIN)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        reader.join(5)
        assert process.stdout is not None
        process.stdout.close()


def test_dev_serves_the_printed_key_and_stops_on_sigterm(dev: DevRun) -> None:
    """The printed key and base URL work with the SDK; SIGTERM stops dev and every child, exit status 0."""
    dev.wait_for("Press Ctrl-C", READY_WITHIN)
    assert any("Redis is " in line and "REDIS_URL is set" in line for line in dev.output)
    assert "USD 10.000000 of play money" in "".join(dev.output)
    children = dev.children()
    assert any(" ingress " in cmd for cmd in children.values())
    assert any(" worker " in cmd for cmd in children.values())
    with openai.OpenAI(
        base_url=dev.banner_value("API"), api_key=dev.banner_value("Dev key"), max_retries=0
    ) as sdk:
        reply = sdk.chat.completions.create(
            model="aiorouter/echo", messages=[{"role": "user", "content": "hi from dev"}]
        )
    assert reply.choices[0].message.content == "hi from dev"
    dev.process.send_signal(signal.SIGTERM)
    assert dev.process.wait(STOP_WITHIN) == 0
    assert not [pid for pid in children if _alive(pid)]


def test_dev_prints_working_dashboard_and_admin_tokens(dev: DevRun) -> None:
    """The dashboard token printed by dev signs in as the dev account, the admin token as the operator."""
    dev.wait_for("Press Ctrl-C", READY_WITHIN)
    dashboard = dev.banner_value("Dashboard")
    account_token = next(line for line in dev.output if "account dev: sign in with" in line).split()[-1]
    admin_token = next(line for line in dev.output if "operator:" in line).split()[-1]
    base = dashboard.removesuffix("/dashboard")
    with httpx.Client(base_url=base, timeout=10) as client:
        assert client.get("/dashboard").status_code == 200
        me = client.get("/dashboard/api/account", headers={"Authorization": f"Bearer {account_token}"})
        assert me.status_code == 200, me.text
        assert "dev" in me.text
        pools = client.get("/admin/pools", headers={"Authorization": f"Bearer {admin_token}"})
        assert pools.status_code == 200, pools.text
        refused = client.get("/admin/pools", headers={"Authorization": f"Bearer {account_token}"})
        assert refused.status_code == 401


def test_dev_stops_everything_when_a_child_dies(dev: DevRun) -> None:
    """If the worker dies, dev says so, stops the ingress too and exits non-zero."""
    dev.wait_for("Press Ctrl-C", READY_WITHIN)
    children = dev.children()
    worker = next(pid for pid, cmd in children.items() if " worker " in cmd)
    os.kill(worker, signal.SIGKILL)
    assert dev.process.wait(STOP_WITHIN) == 1
    dev.wait_for("exited with status", 5)
    assert not [pid for pid in children if _alive(pid)]


def test_other_commands_find_the_dev_redis_while_it_runs(dev: DevRun, redis_url: str) -> None:
    """While dev runs, `aiorouter keys list` in a subdirectory with no REDIS_URL uses dev's Redis (it
    lists the dev key and says why); once dev stopped, its record is gone."""
    dev.wait_for("Press Ctrl-C", READY_WITHIN)
    record = orjson.loads((dev.workdir / ".aiorouter" / "dev.json").read_bytes())
    assert record["redis_url"] == redis_url and record["pid"] == dev.process.pid
    below = dev.workdir / "sub"
    below.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "AIOROUTER_REDIS_URL")}
    env["PYTHONPATH"] = str(REPO)
    listed = subprocess.run(
        [sys.executable, "-m", "cli", "keys", "list"],
        cwd=below,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert "the running 'aiorouter dev'" in listed.stderr and redis_url in listed.stderr
    key_id = next(line for line in dev.output if line.strip().startswith("(id ")).split()[1].rstrip(",")
    assert key_id.startswith("key_") and key_id in listed.stdout
    dev.process.send_signal(signal.SIGTERM)
    assert dev.process.wait(STOP_WITHIN) == 0
    assert not (dev.workdir / ".aiorouter" / "dev.json").exists()


SLOW_CONFIG = """
[providers.slow]
kind = "simulated"
tokens_per_second = 10.0

[[models]]
id = "dev/slow"
deployments = [{ provider = "slow", upstream_model = "lorem" }]
"""


@pytest.fixture
def slow_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Give the dev run (requested after this) a model whose streams last a minute and a half."""
    path = tmp_path / "slow.toml"
    path.write_text(SLOW_CONFIG)
    monkeypatch.setenv("AIOROUTER_CONFIG", str(path))


def test_ctrl_c_ends_an_open_stream_with_an_error_event_and_kills_nothing(
    slow_model: None, dev: DevRun
) -> None:
    """Ctrl-C with a long stream open: the stream ends with ingress_stopping within seconds, not cut by the
    SIGKILL dev sends children still alive 10 s after its SIGTERM (their graces are 30 s)."""
    dev.wait_for("Press Ctrl-C", READY_WITHIN)
    ended: queue.Queue[str | None] = queue.Queue()
    first = threading.Event()

    def stream() -> None:
        try:
            with openai.OpenAI(
                base_url=dev.banner_value("API"), api_key=dev.banner_value("Dev key"), max_retries=0
            ) as sdk:
                chunks = sdk.chat.completions.create(
                    model="dev/slow",
                    messages=[{"role": "user", "content": "go"}],
                    max_tokens=900,
                    stream=True,
                )
                for _ in chunks:
                    first.set()
            ended.put(None)
        except openai.APIError as exc:
            ended.put(getattr(exc, "code", None))

    threading.Thread(target=stream, daemon=True).start()
    assert first.wait(30), "".join(dev.output)
    signalled = time.monotonic()
    dev.process.send_signal(signal.SIGINT)
    assert dev.process.wait(STOP_WITHIN) == 0
    assert ended.get(timeout=5) == "ingress_stopping"
    assert time.monotonic() - signalled < 5.0
    assert not any("killing it" in line for line in dev.output), "".join(dev.output)
