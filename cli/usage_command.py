"""``aiorouter usage [--account ID] [--day YYYY-MM-DD]``: per-day per-model usage over :mod:`shared.usage`."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from typing import Any

import redis.asyncio as aredis

from cli.config_option import add_config_option
from cli.failures import CommandFailed
from cli.store_actions import print_json, print_table, store_handler
from ingress.control import accounts
from shared import credits, usage
from shared.settings import Settings

MAX_ACCOUNTS = 10_000


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "usage",
        help="show usage per account, day and model",
        description="Requests, errors, tokens and cost per account and model on one UTC day.",
    )
    parser.add_argument("--account", help="only this account (default: every account)")
    parser.add_argument("--day", help="the UTC day, YYYY-MM-DD (default: today)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_config_option(parser)
    parser.set_defaults(handler=store_handler(_usage))


async def _usage(client: aredis.Redis, settings: Settings, args: argparse.Namespace) -> int:
    day = _day(args.day)
    if args.account is not None:
        account_ids = [(await accounts.require_account(client, args.account)).id]
    else:
        account_ids = [a.id for a in await accounts.list_accounts(client, limit=MAX_ACCOUNTS)]
    rows: list[tuple[str, usage.DailyModelUsage]] = []
    for account_id in account_ids:
        rows.extend((account_id, row) for row in await usage.daily_usage(client, account_id, day, day))
    if args.json:
        print_json([{"account_id": account_id, **row.to_json()} for account_id, row in rows])
        return 0
    if not rows:
        print(f"No usage on {day.isoformat()}.")
        return 0
    print_table(
        ("DAY", "ACCOUNT", "MODEL", "REQUESTS", "ERRORS", "PROMPT TOKENS", "COMPLETION TOKENS", "COST USD"),
        [
            (
                row.day,
                account_id,
                row.model,
                str(row.requests),
                str(row.errors),
                str(row.prompt_tokens),
                str(row.completion_tokens),
                credits.usd(row.cost_micros),
            )
            for account_id, row in rows
        ],
    )
    return 0


def _day(raw: str | None) -> date:
    if raw is None:
        return datetime.now(UTC).date()
    try:
        return usage.parse_day(raw)
    except ValueError as exc:
        raise CommandFailed(
            f"--day {raw!r} is not a date (YYYY-MM-DD, from 1970-01-01): {exc}", exit_status=2
        ) from None
