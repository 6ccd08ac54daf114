"""The child processes of ``aiorouter dev``: start them, notice one dying, stop them all in order."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

_STOP_TIMEOUT = 10.0
_HURRY_AFTER = 1.0
"""Seconds after the first SIGTERM before the second, which ends a child's shutdown grace at once: an
ingress ends its open requests with ``ingress_stopping``, a worker stops its jobs (both default to a 30 s
grace, longer than :data:`_STOP_TIMEOUT`, whose SIGKILL would cut open streams with no error event)."""


@dataclass(slots=True)
class Child:
    """One ``aiorouter`` subcommand running as a child process (``python -m cli ...``)."""

    label: str
    argv: Sequence[str]
    process: subprocess.Popen[bytes] | None = None

    @property
    def exit_status(self) -> int | None:
        return None if self.process is None else self.process.poll()


@dataclass(slots=True)
class ChildGroup:
    """Children started in order and stopped in reverse order."""

    env: Mapping[str, str]
    cwd: Path | None = None
    children: list[Child] = field(default_factory=list)

    def start(self, label: str, *arguments: str) -> Child:
        child = Child(label, [sys.executable, "-m", "cli", *arguments])
        child.process = subprocess.Popen(
            child.argv,
            env=dict(self.env),
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            process_group=0,  # Ctrl-C reaches only `aiorouter dev`, which stops the children in order
        )
        self.children.append(child)
        return child

    def first_dead(self) -> Child | None:
        """A child that exited on its own, if any."""
        return next((c for c in self.children if c.exit_status is not None), None)

    def stop(self, out: TextIO = sys.stderr) -> None:
        """SIGTERM every child (latest first), again to those still alive :data:`_HURRY_AFTER` later (their
        open work ends at once), then SIGKILL whatever is still alive after a grace period."""
        alive = [c for c in reversed(self.children) if c.process is not None and c.process.poll() is None]
        for child in alive:
            assert child.process is not None
            child.process.terminate()
        hurry_at = time.monotonic() + _HURRY_AFTER
        while any(c.exit_status is None for c in alive) and time.monotonic() < hurry_at:
            time.sleep(0.05)
        for child in alive:
            if child.exit_status is None:
                assert child.process is not None
                child.process.terminate()
        deadline = time.monotonic() + _STOP_TIMEOUT
        for child in alive:
            assert child.process is not None
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                out.write(f"{child.label} did not stop within {_STOP_TIMEOUT:.0f}s; killing it\n")
                child.process.kill()
                child.process.wait()
