"""``aiorouter worker-health``: a worker's liveness and readiness, for an orchestrator's exec probes.

A worker is *ready* while its liveness key (:func:`shared.keys.worker_alive`) exists: the ingress sees
it alive and it takes jobs.  It is *live* unless Redis answers and that key is gone: the key expires
``worker_dead_after`` after the worker's event loop stopped turning (stuck, not busy; see
:mod:`workers.liveness`), and restarting the container is the cure.  An unreachable Redis fails
readiness but not liveness: a restart would not bring Redis back, and it would cut the streams the
worker still relays once Redis answers again.

The probe names the worker with ``--name``, or reads the name from the file the worker wrote at start
(``aiorouter worker --name-file PATH``), so a pod's probe finds whichever name its current container has.
Exit status 0 passes the probe, 1 fails it; one line on stdout or stderr says why.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import redis

from cli.config_option import add_config_option, settings_from_args
from cli.failures import CommandFailed, printable_url
from shared import keys
from shared.redis_client import sync_client

REDIS_TIMEOUT = 2.0  # seconds the probe waits for Redis: well under any probe's timeout


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "worker-health",
        help="exit 0 if a worker is live (or ready), for exec probes",
        description="Check one worker through its liveness key in Redis: exit 0 if it passes, 1 if not.",
    )
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--name", help="the worker's name (as given to `aiorouter worker --name`)")
    who.add_argument("--name-file", metavar="PATH", help="read the name from the worker's --name-file")
    parser.add_argument(
        "--probe",
        choices=("live", "ready"),
        default="ready",
        help="ready: its liveness key exists; live: Redis does not say it is gone (default: ready)",
    )
    add_config_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    name = args.name or _name_from(Path(args.name_file))
    client = sync_client(
        settings.redis_url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
    )
    try:
        alive = bool(client.exists(keys.worker_alive(name)))
    except (redis.RedisError, OSError) as exc:
        where = printable_url(settings.redis_url)
        if args.probe == "live":
            print(f"worker {name}: Redis at {where} unreachable ({exc}); not judging liveness")
            return 0
        raise CommandFailed(f"worker {name}: Redis at {where} unreachable ({exc})") from exc
    finally:
        client.close()
    if not alive:
        raise CommandFailed(
            f"worker {name}: no liveness key {keys.worker_alive(name)} (not started yet, its event loop "
            f"stuck for longer than worker_dead_after, or stopped)"
        )
    print(f"worker {name}: alive", file=sys.stdout)
    return 0


def _name_from(path: Path) -> str:
    try:
        name = path.read_text().strip()
    except OSError as exc:
        raise CommandFailed(
            f"no worker name in {path} ({os.strerror(exc.errno or 0)}): not started yet"
        ) from exc
    if not name:
        raise CommandFailed(f"{path} is empty: the worker has not written its name yet")
    return name
