"""The offline validators tests/deploy/ runs: each comes from the test extra (a wheel carrying its binary
or data).  One that is missing skips a test locally and fails it under CI=true, so CI never passes
without having checked."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = "pip install -e '.[test]'"


def _missing(what: str) -> None:
    message = f"{what} is not installed ({INSTALL})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}: CI must run this check", pytrace=False)
    pytest.skip(message)


def command(name: str) -> str:
    """The path of a command-line tool: the venv's, else one on PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        _missing(f"the `{name}` command")
        raise AssertionError("unreachable")
    return found


def module(name: str) -> ModuleType:
    """A Python module the check needs."""
    try:
        return importlib.import_module(name)
    except ImportError:
        _missing(f"the Python module {name!r}")
        raise


def run(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run a tool to the end; its output comes back for the assertion's message."""
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
