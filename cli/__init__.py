"""The ``aiorouter`` console command.

    aiorouter dev      run the whole system locally (Redis, ingress, a simulated worker pool, a dev key)
    aiorouter ingress  run the HTTP ingress under uvicorn
    aiorouter worker   run one worker process of a provider pool
    aiorouter worker-health  exit 0 if a worker is live (or ready): an exec probe
    aiorouter batches  run the batch driver (the Batch API's lines, fed into each pool's batch lane)
    aiorouter keys     create, list and revoke API keys
    aiorouter accounts create, show, list and update accounts (plan, status)
    aiorouter credits  add credit, show balances and ledgers
    aiorouter usage    usage per account, day and model
    aiorouter breakers show every deployment's circuit breaker

Each subcommand lives in its own module and registers itself with :func:`build_parser`.  Failures the
user can act on (bad settings, Redis unreachable, unknown key id) end as one line on stderr and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cli import (
    accounts_command,
    batches_command,
    breakers_command,
    credits_command,
    dev_command,
    ingress_command,
    keys_command,
    usage_command,
    worker_command,
    worker_health_command,
)
from cli.failures import CommandFailed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiorouter", description="OpenAI-compatible LLM API router: ingress, provider workers, keys."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (
        dev_command,
        ingress_command,
        worker_command,
        worker_health_command,
        batches_command,
        keys_command,
        accounts_command,
        credits_command,
        usage_command,
        breakers_command,
    ):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.handler(args)
    except CommandFailed as exc:
        print(f"aiorouter {args.command}: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130
    return status
