"""The releases of redis-py and rq our code is tested on, and a refusal to run on any other.

:mod:`shared.autopipeline` speaks RESP3 through redis-py's private parser and response callbacks, and the
worker records rq's bookkeeping with rq's private job, execution and result methods
(:mod:`workers.bookkeeping`).  Another major release may change either without notice and then return
wrong data rather than fail, so a process refuses to start on one (pyproject.toml pins the same ranges;
``tests/shared/test_private_apis.py`` fails on a release that changes what we touch).
"""

from __future__ import annotations

from importlib import metadata
from typing import Final

from shared.errors import ConfigError

# distribution -> (lowest major, first major not allowed), as pinned in pyproject.toml
TESTED_MAJORS: Final[dict[str, tuple[int, int]]] = {"redis": (8, 9), "rq": (3, 4)}


def untested(distribution: str, version: str | None = None) -> str | None:
    """Why ``distribution`` at ``version`` (default: the installed one) is not a tested release, or None."""
    low, high = TESTED_MAJORS[distribution]
    try:
        version = version if version is not None else metadata.version(distribution)
        major = int(version.split(".", 1)[0])
    except (metadata.PackageNotFoundError, ValueError):
        return f"{distribution} {version or '(not installed)'} is not a release AIOrouter can check"
    if low <= major < high:
        return None
    return f"{distribution} {version} is installed; AIOrouter is tested on {distribution}>={low},<{high}"


def require_tested(*distributions: str) -> None:
    """Raise :class:`ConfigError` naming every one of ``distributions`` that is not a tested release."""
    problems = [p for p in map(untested, distributions) if p is not None]
    if problems:
        raise ConfigError("; ".join(problems) + " (pip install -e . installs the tested range)")


def require_tested_redis() -> None:
    """The auto-pipelined client's check: redis-py's private parser API must be the tested one."""
    require_tested("redis")
