"""Real ``aiorouter`` processes for chaos tests, started from a TOML file, their output kept in a log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def aiorouter_process(
    arguments: list[str], *, config: Path, redis_url: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m cli ARGUMENTS`` with ``config`` on ``redis_url``; killed (if still running) on exit."""
    env = {**os.environ, "REDIS_URL": redis_url, "AIOROUTER_CONFIG": str(config), "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", *arguments],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(10)
