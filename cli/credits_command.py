"""``aiorouter credits add|balance|ledger``: credit over :mod:`shared.credits`, as the admin API."""

from __future__ import annotations

import argparse
from typing import Any

import redis.asyncio as aredis

from cli.argument_types import PAGE
from cli.config_option import add_config_option
from cli.store_actions import print_json, print_table, store_handler, utc
from ingress.control import accounts
from shared import credits
from shared.settings import Settings


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "credits",
        help="add credit, show balances and ledgers",
        description="Credit in USD (kept as integer micro-USD); every grant is a ledger entry.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    add = actions.add_parser("add", help="add credit to an account")
    add.add_argument("account_id", metavar="ACCOUNT_ID")
    add.add_argument("amount_usd", metavar="AMOUNT_USD", help='a positive amount of USD, e.g. 10 or "12.50"')
    add.add_argument("--reason", default="", help="kept in the ledger entry")
    add.set_defaults(handler=store_handler(_add))

    balance = actions.add_parser("balance", help="show an account's balance, holds and spending")
    balance.add_argument("account_id", metavar="ACCOUNT_ID")
    balance.set_defaults(handler=store_handler(_balance))

    ledger = actions.add_parser("ledger", help="list an account's credit grants, newest first")
    ledger.add_argument("account_id", metavar="ACCOUNT_ID")
    ledger.add_argument("--limit", type=PAGE, default=100)
    ledger.set_defaults(handler=store_handler(_ledger))

    for sub in (add, balance, ledger):
        sub.add_argument("--json", action="store_true", help="print JSON instead of text")
        add_config_option(sub)


async def _add(client: aredis.Redis, settings: Settings, args: argparse.Namespace) -> int:
    amount = credits.parse_usd(args.amount_usd)
    reason = accounts.check_name(args.reason, param="reason")
    balance, entry = await credits.add_credit(client, args.account_id, amount, reason=reason, actor="cli")
    if args.json:
        print_json({"credit": balance.to_json(), "ledger_entry": entry.to_json()})
        return 0
    print(
        f"Added {credits.usd(amount)} USD to {args.account_id}; "
        f"balance {credits.usd(balance.balance)} USD, available {credits.usd(balance.available)} USD."
    )
    return 0


async def _balance(client: aredis.Redis, settings: Settings, args: argparse.Namespace) -> int:
    await accounts.require_account(client, args.account_id)
    balance = await credits.get_balance(client, args.account_id)
    if args.json:
        print_json(balance.to_json())
        return 0
    print(
        f"{args.account_id}: balance {credits.usd(balance.balance)} USD, "
        f"held by running requests {credits.usd(balance.reserved)} USD, "
        f"available {credits.usd(balance.available)} USD, spent {credits.usd(balance.spent)} USD."
    )
    return 0


async def _ledger(client: aredis.Redis, settings: Settings, args: argparse.Namespace) -> int:
    await accounts.require_account(client, args.account_id)
    entries = await credits.ledger(client, args.account_id, count=max(1, args.limit))
    if args.json:
        print_json([e.to_json() for e in entries])
        return 0
    if not entries:
        print(f"No ledger entries for {args.account_id}.")
        return 0
    rows = [
        (utc(e.at_ms / 1000), credits.usd(e.amount), credits.usd(e.balance), e.actor, e.reason)
        for e in entries
    ]
    print_table(("AT (UTC)", "AMOUNT USD", "BALANCE USD", "BY", "REASON"), rows)
    return 0
