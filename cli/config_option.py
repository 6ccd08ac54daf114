"""The ``--config FILE`` option every subcommand takes, and settings loading with CLI-friendly errors."""

from __future__ import annotations

import argparse

from cli.failures import CommandFailed
from shared.errors import ConfigError
from shared.settings import Settings, load_settings
from shared.tested_versions import require_tested


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML settings file (default: $AIOROUTER_CONFIG, else built-in defaults)",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(args.config)
    except ConfigError as exc:
        raise CommandFailed(f"bad settings: {exc.message}") from exc


def require_tested_libraries(*distributions: str) -> None:
    """Refuse to run a server on a redis-py or rq release its private-API use is not tested on."""
    try:
        require_tested(*distributions)
    except ConfigError as exc:
        raise CommandFailed(exc.message) from exc
