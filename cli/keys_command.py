"""``aiorouter keys create|list|revoke``: manage API keys over :mod:`ingress.api_keys`."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import redis.asyncio as aredis

from cli.config_option import add_config_option
from cli.failures import CommandFailed
from cli.key_issuing import issue_key
from cli.redis_finding import settings_with_redis
from cli.store_actions import Action, print_table, utc, with_redis
from ingress import api_keys
from ingress.control import accounts
from ingress.control.accounts import ACCOUNT_ID_RE
from shared.settings import Settings


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "keys", help="create, list and revoke API keys", description="Manage API keys (stored as digests)."
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = actions.add_parser(
        "create",
        help="create a key and print its secret once",
        description="Create a key on an account; the account is created first if it does not exist.",
    )
    create.add_argument("--account", default="default", help="account id the key bills to (default: default)")
    create.add_argument(
        "--plan", help="plan of a new account, one of the settings' plans (default: settings.default_plan)"
    )
    create.add_argument("--name", default="", help="a label for people")
    create.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    create.set_defaults(handler=_run(_create))

    listing = actions.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--account", help="only the keys of this account")
    listing.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    listing.set_defaults(handler=_run(_list))

    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key's id (key_...), as shown by `keys list`")
    revoke.set_defaults(handler=_run(_revoke))

    for sub in (create, listing, revoke):
        add_config_option(sub)


def _run(action: Action) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        _check_arguments(args)
        settings = settings_with_redis(args)
        if getattr(args, "plan", None) is not None and args.plan not in settings.plans:
            known = ", ".join(settings.plans)
            raise CommandFailed(f"unknown plan {args.plan!r}; the settings define: {known}", exit_status=2)
        return asyncio.run(with_redis(settings, args, action))

    return handler


def _check_arguments(args: argparse.Namespace) -> None:
    account = getattr(args, "account", None)
    if account is not None and not ACCOUNT_ID_RE.fullmatch(account):
        raise CommandFailed(
            f"--account {account!r} is not a valid id (letters, digits, and _ . : @ -; at most 128)",
            exit_status=2,
        )


async def _create(client: aredis.Redis, settings: Settings, args: argparse.Namespace) -> int:
    issued = await issue_key(client, settings, account_id=args.account, plan=args.plan, name=args.name)
    record = issued.record
    if args.json:
        extra = {"dashboard_token": issued.new_account_token} if issued.new_account_token else {}
        print(orjson.dumps({"secret": issued.secret, **_record_json(record), **extra}).decode())
        return 0
    if issued.new_account_token:
        print(
            f"Created account {record.account_id} (plan {record.plan}); "
            f"its dashboard token, shown only this once: {issued.new_account_token}"
        )
    print(
        f"Created key {record.key_id} (account {record.account_id}, plan {record.plan}).\n"
        f"Secret, shown only this once:\n\n    {issued.secret}\n"
    )
    return 0


async def _list(client: aredis.Redis, settings: Settings, args: argparse.Namespace) -> int:
    if args.account is not None:
        await accounts.require_account(client, args.account)  # an unknown account: one line, exit 1
    records = await api_keys.list_keys(client, args.account)
    if args.json:
        print(orjson.dumps([_record_json(r) for r in records]).decode())
        return 0
    if not records:
        print("No keys." if args.account is None else f"No keys for account {args.account}.")
        return 0
    rows = [
        (r.key_id, r.account_id, r.plan, "revoked" if r.revoked else "active", utc(r.created_at), r.name)
        for r in records
    ]
    print_table(("KEY ID", "ACCOUNT", "PLAN", "STATUS", "CREATED (UTC)", "NAME"), rows)
    return 0


async def _revoke(client: aredis.Redis, settings: Settings, args: argparse.Namespace) -> int:
    if not await api_keys.revoke_key(client, args.key_id):
        raise CommandFailed(f"no key with id {args.key_id!r} (see `aiorouter keys list`)")
    print(f"Revoked key {args.key_id}; every ingress refuses it within its key cache TTL.")
    return 0


def _record_json(record: api_keys.ApiKeyRecord) -> dict[str, Any]:
    return {
        "key_id": record.key_id,
        "account_id": record.account_id,
        "plan": record.plan,
        "name": record.name,
        "created_at": record.created_at,
        "revoked": record.revoked,
    }
