"""`aiorouter ingress` and `aiorouter worker` hand the right settings and options to their entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cli import ingress_command, main, worker_command
from ingress import server
from workers import main as worker_main


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any, dict[str, Any]]]:
    """Replace both entry points with recorders (and leave the test process' logging alone); a clean
    environment for settings."""
    recorded: list[tuple[str, Any, dict[str, Any]]] = []
    monkeypatch.setattr(ingress_command, "configure_logging", lambda settings: None)
    monkeypatch.setattr(worker_command, "configure_logging", lambda settings: None)
    for command in (ingress_command, worker_command):  # the test process keeps its own collector
        monkeypatch.setattr(
            command, "tune_collector", lambda threshold: recorded.append(("gc", threshold, {}))
        )
    monkeypatch.setattr(server, "run", lambda settings, **kw: recorded.append(("ingress", settings, kw)))
    monkeypatch.setattr(
        worker_main, "run_worker", lambda settings, **kw: recorded.append(("worker", settings, kw))
    )
    for var in ("AIOROUTER_CONFIG", "REDIS_URL", "AIOROUTER_REDIS_URL", "AIOROUTER_HOST", "AIOROUTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    return recorded


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "aiorouter.toml"
    path.write_text(
        'host = "0.0.0.0"\nport = 9001\n'
        '[providers.fast]\nkind = "simulated"\nconcurrency = 12\n'
        '[[models]]\nid = "fast/echo"\nprovider = "fast"\nupstream_model = "echo"\n'
    )
    return path


def test_ingress_defaults_to_the_settings(
    calls: list[tuple[str, Any, dict[str, Any]]], tmp_path: Path
) -> None:
    """Without --host/--port the ingress binds what the --config file says."""
    assert main(["ingress", "--config", str(_config(tmp_path))]) == 0
    gc_call, (name, settings, options) = calls
    assert gc_call == ("gc", settings.gc_young_threshold, {})  # before serving
    assert name == "ingress" and options == {
        "host": "0.0.0.0",
        "port": 9001,
        "own_logging": False,
        "tracer": None,
    }
    assert set(settings.providers) == {"fast"}


def test_ingress_options_win(calls: list[tuple[str, Any, dict[str, Any]]], tmp_path: Path) -> None:
    """--host and --port override the settings."""
    assert main(["ingress", "--config", str(_config(tmp_path)), "--host", "127.0.0.1", "--port", "0"]) == 0
    assert calls[1][2] == {"host": "127.0.0.1", "port": 0, "own_logging": False, "tracer": None}


def test_worker_takes_concurrency_from_the_provider(
    calls: list[tuple[str, Any, dict[str, Any]]], tmp_path: Path
) -> None:
    """Without --concurrency a worker runs the provider's `concurrency` jobs at once."""
    assert main(["worker", "--pool", "fast", "--config", str(_config(tmp_path))]) == 0
    gc_call, (name, settings, options) = calls
    assert gc_call == ("gc", settings.gc_young_threshold, {})  # before the worker starts
    assert name == "worker" and options == {
        "pool": "fast",
        "concurrency": 12,
        "name": None,
        "burst": False,
        "metrics_port": 0,
        "tracer": None,
    }


def test_worker_options(calls: list[tuple[str, Any, dict[str, Any]]]) -> None:
    """--concurrency, --name, --burst and --metrics-port are passed through."""
    argv = ["worker", "--pool", "simulated", "--concurrency", "3", "--name", "w-1", "--burst"]
    assert main([*argv, "--metrics-port", "9400"]) == 0
    assert calls[1][2] == {
        "pool": "simulated",
        "concurrency": 3,
        "name": "w-1",
        "burst": True,
        "metrics_port": 9400,
        "tracer": None,
    }


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["worker", "--pool", "nope"], 2, "unknown pool 'nope'"),
        (["worker", "--pool", "simulated", "--concurrency", "0"], 2, "at least 1"),
        (["ingress", "--config", "/nonexistent/aiorouter.toml"], 1, "bad settings"),
    ],
)
def test_bad_input_is_one_line(
    calls: list[tuple[str, Any, dict[str, Any]]],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    status: int,
    message: str,
) -> None:
    """An unknown pool, a bad concurrency or an unreadable settings file: one stderr line, no start."""
    assert main(argv) == status
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not calls


def test_ingress_refuses_a_short_admin_token_in_one_line(tmp_path: Path) -> None:
    """A real `aiorouter ingress` with a 12-character admin token exits 1 with one line on stderr,
    before it binds a port; `aiorouter dev` refuses it the same way before starting anything."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOROUTER_")}
    env["AIOROUTER_ADMIN_TOKEN"] = "short-secret"
    for command in (["ingress", "--port", "1"], ["dev", "--port", "0"]):
        done = subprocess.run(
            [sys.executable, "-m", "cli", *command],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert done.stderr.startswith(f"aiorouter {command[0]}: bad settings: admin_token")
        assert "has 12 characters; use at least 32" in done.stderr
