"""Which Redis a command that manages the store (keys, accounts, credits, usage, breakers) talks to.

In order: ``REDIS_URL``/``AIOROUTER_REDIS_URL``, else a ``redis_url`` set by the settings file
(``--config`` or ``AIOROUTER_CONFIG``), else the Redis of the ``aiorouter dev`` running in this directory
or a parent (:mod:`cli.dev_record`), else the default.  The command says which one, and why, in one line
on stderr, so a key is never created in a Redis nobody reads.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from cli.config_option import settings_from_args
from cli.dev_record import find_dev_record
from cli.failures import printable_url
from shared.settings import Settings


@dataclass(frozen=True, slots=True)
class FoundRedis:
    url: str
    reason: str


def find_redis(settings: Settings, config: str | None, env: Mapping[str, str], workdir: Path) -> FoundRedis:
    """The Redis to use and why (pure but for reading the dev record and probing its pid)."""
    for var in ("REDIS_URL", "AIOROUTER_REDIS_URL"):
        if env.get(var):
            return FoundRedis(settings.redis_url, f"{var} is set")
    config_file = config or env.get("AIOROUTER_CONFIG")
    if config_file and settings.redis_url != Settings().redis_url:
        return FoundRedis(settings.redis_url, f"redis_url in the settings file {config_file}")
    record = find_dev_record(workdir)
    if record is not None and record.alive:
        return FoundRedis(record.redis_url, f"the running 'aiorouter dev', {_shown(record.path, workdir)}")
    why = "REDIS_URL is not set and no 'aiorouter dev' runs here"
    if record is not None:
        why += f"; {_shown(record.path, workdir)} is stale, its pid {record.pid} is gone"
    return FoundRedis(settings.redis_url, f"the default: {why}")


def settings_with_redis(args: argparse.Namespace) -> Settings:
    """The command's settings, their ``redis_url`` the one :func:`find_redis` picks, announced on stderr."""
    settings = settings_from_args(args)
    found = find_redis(settings, args.config, os.environ, Path.cwd())
    print(f"aiorouter {args.command}: using {printable_url(found.url)} ({found.reason})", file=sys.stderr)
    return replace(settings, redis_url=found.url)


def _shown(path: Path, workdir: Path) -> str:
    try:
        return str(path.relative_to(workdir))
    except ValueError:
        return str(path)
