"""``aiorouter batches``: the batch driver process (validates batches, feeds their lines into each pool's
batch lane, collects and finalizes results; see docs/batch.md)."""

from __future__ import annotations

import argparse
from typing import Any

from cli.config_option import add_config_option, require_tested_libraries, settings_from_args
from cli.gc_tuning import tune_collector


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "batches",
        help="run the batch driver",
        description="Run the batch driver: one at a time drives every batch (others wait on its lease).",
    )
    parser.add_argument("--name", help="driver name held in its lease (default: generated, unique)")
    add_config_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    require_tested_libraries("redis", "rq")
    from ingress.batches.driver_process import run_driver  # imported on use, like the other servers

    tune_collector(settings.gc_young_threshold)
    run_driver(settings, name=args.name or "")
    return 0
