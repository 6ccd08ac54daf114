"""``aiorouter accounts create|get|list|update``: accounts, as the admin API manages them."""

from __future__ import annotations

import argparse
from typing import Any

import redis.asyncio as aredis

from cli.argument_types import OFFSET, PAGE
from cli.config_option import add_config_option
from cli.store_actions import print_json, print_table, store_handler, utc
from ingress.control import accounts
from shared import credits
from shared.settings import Settings


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "accounts",
        help="create, show, list and update accounts",
        description="Manage accounts: plan, status (active/suspended) and dashboard token.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="create an account and print its dashboard token once")
    create.add_argument("--id", help="the account id (default: acct_<random hex>)")
    create.add_argument("--name", default="", help="a label for people")
    create.add_argument("--plan", help="one of the settings' plans (default: settings.default_plan)")
    create.set_defaults(handler=store_handler(_create))

    get = actions.add_parser("get", help="show one account, its plan's limits and its credit")
    get.add_argument("account_id", metavar="ACCOUNT_ID")
    get.set_defaults(handler=store_handler(_get))

    listing = actions.add_parser("list", help="list accounts in creation order")
    listing.add_argument("--offset", type=OFFSET, default=0)
    listing.add_argument("--limit", type=PAGE, default=100)
    listing.set_defaults(handler=store_handler(_list))

    update = actions.add_parser("update", help="change an account's name, plan or status")
    update.add_argument("account_id", metavar="ACCOUNT_ID")
    update.add_argument("--name")
    update.add_argument("--plan")
    update.add_argument("--status", choices=accounts.STATUSES)
    update.set_defaults(handler=store_handler(_update))

    for sub in (create, get, listing, update):
        sub.add_argument("--json", action="store_true", help="print JSON instead of text")
        add_config_option(sub)


async def _create(client: aredis.Redis, settings: Settings, args: argparse.Namespace) -> int:
    account, token = await accounts.create_account(
        client, settings, name=args.name, plan=args.plan, account_id=args.id
    )
    if args.json:
        print_json({**account.to_json(), "dashboard_token": token})
        return 0
    print(
        f"Created account {account.id} (plan {account.plan}).\n"
        f"Dashboard token, shown only this once:\n\n    {token}\n"
    )
    return 0


async def _get(client: aredis.Redis, settings: Settings, args: argparse.Namespace) -> int:
    account = await accounts.require_account(client, args.account_id)
    balance = await credits.get_balance(client, account.id)
    if args.json:
        print_json(account_summary(account, balance, settings))
        return 0
    _print_accounts([account], [balance], settings)
    return 0


async def _list(client: aredis.Redis, settings: Settings, args: argparse.Namespace) -> int:
    page = await accounts.list_accounts(client, offset=max(0, args.offset), limit=max(1, args.limit))
    balances = await credits.get_balances(client, [a.id for a in page])
    if args.json:
        print_json([account_summary(a, b, settings) for a, b in zip(page, balances, strict=True)])
        return 0
    if not page:
        print("No accounts.")
        return 0
    _print_accounts(page, balances, settings)
    return 0


async def _update(client: aredis.Redis, settings: Settings, args: argparse.Namespace) -> int:
    account = await accounts.update_account(
        client, settings, args.account_id, name=args.name, plan=args.plan, status=args.status
    )
    balance = await credits.get_balance(client, account.id)
    if args.json:
        print_json(account_summary(account, balance, settings))
        return 0
    _print_accounts([account], [balance], settings)
    return 0


def account_summary(
    account: accounts.Account, balance: credits.Balance, settings: Settings
) -> dict[str, Any]:
    """The account as the admin API shows it: its record, credit and plan limits."""
    plan = settings.plans.get(account.plan)
    limits = {"requests_per_minute": plan.requests_per_minute} if plan else None
    return {**account.to_json(), "credit": balance.to_json(), "rate_limit": limits}


def _print_accounts(
    page: list[accounts.Account], balances: list[credits.Balance], settings: Settings
) -> None:
    rows = []
    for account, balance in zip(page, balances, strict=True):
        plan = settings.plans.get(account.plan)
        rpm = f"{plan.requests_per_minute}/min" if plan else "?"
        rows.append(
            (
                account.id,
                account.plan,
                rpm,
                account.status,
                credits.usd(balance.available),
                utc(account.created_at),
                account.name,
            )
        )
    print_table(("ACCOUNT", "PLAN", "LIMIT", "STATUS", "AVAILABLE USD", "CREATED (UTC)", "NAME"), rows)
