"""``aiorouter worker``: one worker process of a provider pool."""

from __future__ import annotations

import argparse
import os
import uuid
from pathlib import Path
from typing import Any

from cli.argument_types import PORT
from cli.config_option import add_config_option, require_tested_libraries, settings_from_args
from cli.failures import CommandFailed
from cli.gc_tuning import tune_collector
from cli.logging_setup import configure_logging
from cli.tracing_setup import tracer_provider


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "worker",
        help="run one worker process of a provider pool",
        description="Run one worker process that executes up to CONCURRENCY jobs of one pool at once.",
    )
    parser.add_argument("--pool", required=True, help="provider (= pool = rq queue) to serve")
    parser.add_argument(
        "--concurrency",
        type=int,
        help="jobs run at once (default: the provider's `concurrency` setting)",
    )
    parser.add_argument("--name", help="worker name shown by `rq info` (default: generated, unique)")
    parser.add_argument(
        "--name-file",
        metavar="PATH",
        help="write the worker's name to PATH at start, for `aiorouter worker-health --name-file PATH`",
    )
    parser.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    parser.add_argument(
        "--metrics-port",
        type=PORT,
        help="serve Prometheus metrics on this port (default: the worker_metrics_port setting; 0: off)",
    )
    add_config_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    require_tested_libraries("redis", "rq")
    configure_logging(settings)
    if args.pool not in settings.providers:
        known = ", ".join(sorted(settings.providers))
        raise CommandFailed(f"unknown pool {args.pool!r}; the settings define: {known}", exit_status=2)
    concurrency = (
        args.concurrency if args.concurrency is not None else settings.provider(args.pool).concurrency
    )
    if concurrency < 1:
        raise CommandFailed("--concurrency must be at least 1", exit_status=2)
    # Imported on use: `aiorouter keys` should not pay for loading the worker stack.
    from workers import main as worker_main

    name = args.name
    if args.name_file:
        name = name or uuid.uuid4().hex  # what rq would generate, known before the worker starts
        _write_atomically(Path(args.name_file), name)
    metrics_port = args.metrics_port if args.metrics_port is not None else settings.worker_metrics_port
    if not 0 <= metrics_port < 65536:
        raise CommandFailed("--metrics-port must be a port number (0: off)", exit_status=2)
    provider = tracer_provider(settings, f"aiorouter-worker-{args.pool}")
    tracer = None
    if provider is not None:
        from workers.tracing import JobTracer

        tracer = JobTracer(provider.get_tracer("aiorouter.worker"))
    tune_collector(settings.gc_young_threshold)
    try:
        worker_main.run_worker(
            settings,
            pool=args.pool,
            concurrency=concurrency,
            name=name,
            burst=args.burst,
            metrics_port=metrics_port,
            tracer=tracer,
        )
    finally:
        if provider is not None:
            provider.shutdown()  # sends the spans still batched
    return 0


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` whole, so a probe reading it meanwhile sees the old name or the new one."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        partial.write_text(text)
        partial.replace(path)
    except OSError as exc:
        raise CommandFailed(f"cannot write the worker name to {path}: {exc}", exit_status=2) from exc
