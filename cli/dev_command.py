"""``aiorouter dev``: the whole system on one machine, for a first-time user.

Picks a Redis (see :mod:`cli.dev_redis`) and records it in ``.aiorouter/dev.json`` for the other commands
(see :mod:`cli.dev_record`), starts worker processes for the simulated pool(s) and the
ingress as child processes, waits until ``/readyz?verbose`` shows a live worker in every pool, creates a
dev key and prints how to call the API.  Ctrl-C or SIGTERM stops everything; if a child dies, the rest
is stopped too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import redis
import redis.asyncio as aredis

from cli.argument_types import PORT
from cli.config_option import add_config_option, settings_from_args
from cli.dev_banner import DevSystem, banner
from cli.dev_processes import Child, ChildGroup
from cli.dev_record import RECORD_PATH, dev_record
from cli.dev_redis import DevRedis, dev_redis, free_port
from cli.failures import CommandFailed, redis_failure
from cli.key_issuing import IssuedKey, issue_key
from ingress import api_keys
from ingress.control import accounts
from ingress.control.admin import check_admin_token
from shared import credits
from shared.errors import AIORouterError, ConfigError
from shared.settings import BatchSettings, Settings

DEV_ACCOUNT = "dev"
DEV_PLAN = "developer"
DEV_KEY_NAME = "aiorouter dev"  # each run revokes the keys of earlier runs, so they never pile up
DEV_CREDIT_MICROS = 10_000_000  # USD 10 of play money, topped up when below a tenth of it
_READY_TIMEOUT = 60.0
_POLL_INTERVAL = 0.25


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "dev",
        help="run the whole system locally",
        description="Run Redis (if needed), the ingress and simulated workers, and print a dev key.",
    )
    parser.add_argument("--port", type=PORT, help="ingress port (default: settings.port; 0 picks a free one)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per pool (default: 1)")
    parser.add_argument("--concurrency", type=int, default=64, help="jobs per worker process (default: 64)")
    parser.add_argument(
        "--pool",
        action="append",
        help="pool to start workers for; repeatable (default: every provider of kind 'simulated')",
    )
    add_config_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        check_admin_token(settings)
    except ConfigError as exc:
        raise CommandFailed(f"bad settings: {exc.message}") from exc
    pools = _pools(settings, args.pool)
    if args.workers < 1 or args.concurrency < 1:
        raise CommandFailed("--workers and --concurrency must be at least 1", exit_status=2)
    port = _usable_port(settings.port if args.port is None else args.port)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops us like Ctrl-C does
    try:
        with ExitStack() as stack:
            redis_server = stack.enter_context(dev_redis(settings, os.environ))
            print(f"aiorouter dev: Redis is {redis_server.description}", flush=True)
            record = stack.enter_context(dev_record(redis_server.url, Path.cwd()))
            if record is None:
                print(
                    f"aiorouter dev: cannot write {RECORD_PATH} here; other aiorouter commands will not "
                    "find this Redis by themselves (set REDIS_URL for them)",
                    file=sys.stderr,
                    flush=True,
                )
            env = {**os.environ, "REDIS_URL": redis_server.url}
            if args.config:
                env["AIOROUTER_CONFIG"] = str(Path(args.config).resolve())
            admin_token = settings.admin_token or secrets.token_urlsafe(32)
            env["AIOROUTER_ADMIN_TOKEN"] = admin_token
            files_dir = _private_files_dir(settings, env)
            children = ChildGroup(env)
            try:
                return _serve(children, settings, args, pools, port, redis_server, admin_token)
            finally:
                _ignore_interrupts()
                print("aiorouter dev: stopping", file=sys.stderr, flush=True)
                children.stop()
                if files_dir is not None:
                    shutil.rmtree(files_dir, ignore_errors=True)
    except KeyboardInterrupt:
        return 0


def _serve(
    children: ChildGroup,
    settings: Settings,
    args: argparse.Namespace,
    pools: Sequence[str],
    port: int,
    redis_server: DevRedis,
    admin_token: str,
) -> int:
    for pool in pools:
        for _ in range(args.workers):
            children.start(
                f"worker ({pool})", "worker", "--pool", pool, "--concurrency", str(args.concurrency)
            )
    children.start("ingress", "ingress", "--host", "127.0.0.1", "--port", str(port))
    children.start("batch driver", "batches")
    base = f"http://127.0.0.1:{port}"
    _wait_until_ready(children, f"{base}/readyz?verbose", pools)
    issued, balance, dashboard_token = asyncio.run(_create_dev_key(redis_server.url, settings))
    system = DevSystem(
        base_url=f"{base}/v1",
        dashboard_url=f"{base}/dashboard",
        dashboard_token=dashboard_token,
        admin_token=admin_token,
        secret=issued.secret,
        key_id=issued.record.key_id,
        account_id=issued.record.account_id,
        credit_usd=credits.usd(balance.available),
        model=_example_model(settings, pools),
        redis=redis_server.description,
        pools=tuple(pools),
        workers_per_pool=args.workers,
        concurrency=args.concurrency,
    )
    print(banner(system), flush=True)
    dead = _wait_for_a_death(children)
    print(f"aiorouter dev: {dead.label} exited with status {dead.exit_status}", file=sys.stderr, flush=True)
    return 1


def _private_files_dir(settings: Settings, env: dict[str, str]) -> str | None:
    """Batch API files go to a private temporary directory (removed on exit) unless the settings or the
    environment name one; None when they do."""
    named = (
        env.get("AIOROUTER_BATCH_STORAGE_DIR") or settings.batches.storage_dir != BatchSettings().storage_dir
    )
    if settings.batches.storage != "local" or named:
        return None
    directory = tempfile.mkdtemp(prefix="aiorouter-dev-files-")
    env["AIOROUTER_BATCH_STORAGE_DIR"] = directory
    return directory


def _pools(settings: Settings, requested: list[str] | None) -> list[str]:
    pools = requested or [p.name for p in settings.providers.values() if p.kind == "simulated"]
    if not pools:
        raise CommandFailed("the settings define no provider of kind 'simulated'; name pools with --pool")
    unknown = [p for p in pools if p not in settings.providers]
    if unknown:
        raise CommandFailed(f"unknown pool(s) {', '.join(unknown)}; defined: {', '.join(settings.providers)}")
    return pools


def _usable_port(port: int) -> int:
    if port == 0:
        return free_port()
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise CommandFailed(f"port {port} is not available ({exc.strerror}); try --port 0") from exc
    return port


def _wait_until_ready(children: ChildGroup, readyz: str, pools: Sequence[str]) -> None:
    """Wait until the ingress is ready and every pool has a live worker (its verbose readiness view)."""
    deadline = time.monotonic() + _READY_TIMEOUT
    last = "no answer yet"
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            dead = children.first_dead()
            if dead is not None:
                raise CommandFailed(f"{dead.label} exited with status {dead.exit_status} during start-up")
            try:
                response = client.get(readyz)
                workers = response.json().get("workers", {}) if response.status_code == 200 else {}
                if all(workers.get(pool, 0) > 0 for pool in pools):
                    return
                last = f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(_POLL_INTERVAL)
    raise CommandFailed(f"the ingress was not ready within {_READY_TIMEOUT:.0f}s ({readyz}: {last})")


async def _create_dev_key(redis_url: str, settings: Settings) -> tuple[IssuedKey, credits.Balance, str]:
    """A key on the ``dev`` account (created on the developer plan the first time), its credit topped up
    to :data:`DEV_CREDIT_MICROS` of play money so priced models answer instead of 402, and a fresh
    dashboard token for that account (the previous one stops working)."""
    client = aredis.Redis.from_url(redis_url)
    try:
        new_account = await accounts.get_account(client, DEV_ACCOUNT) is None
        for earlier in await api_keys.list_keys(client, DEV_ACCOUNT):  # keys of earlier runs: stale now
            if earlier.name == DEV_KEY_NAME and not earlier.revoked:
                await api_keys.revoke_key(client, earlier.key_id)
        plan = DEV_PLAN if new_account and DEV_PLAN in settings.plans else None
        issued = await issue_key(client, settings, account_id=DEV_ACCOUNT, plan=plan, name=DEV_KEY_NAME)
        balance = await credits.get_balance(client, DEV_ACCOUNT)
        if balance.available < DEV_CREDIT_MICROS // 10:
            balance, _ = await credits.add_credit(
                client,
                DEV_ACCOUNT,
                DEV_CREDIT_MICROS - balance.available,
                reason="aiorouter dev play money",
                actor="aiorouter dev",
            )
        dashboard_token = await accounts.rotate_dashboard_token(client, DEV_ACCOUNT)
        return issued, balance, dashboard_token
    except redis.RedisError as exc:
        raise redis_failure(redis_url, exc) from exc
    except AIORouterError as exc:
        raise CommandFailed(f"cannot create the dev key: {exc.message}") from exc
    finally:
        await client.aclose()


def _example_model(settings: Settings, pools: Sequence[str]) -> str:
    served = (m.id for m in settings.models.values() if any(d.provider in pools for d in m.deployments))
    return next(served, "aiorouter/echo")


def _wait_for_a_death(children: ChildGroup) -> Child:
    while (dead := children.first_dead()) is None:
        time.sleep(_POLL_INTERVAL)
    return dead


def _ignore_interrupts() -> None:
    """Let clean-up finish: a second Ctrl-C must not leave children or a private Redis behind."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
