"""``aiorouter keys create|list|revoke``: manage API keys over :mod:`shared.api_keys`."""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
import redis
import redis.asyncio as aredis

from shared import api_keys
from shared.cli.config_option import add_config_option, settings_from_args
from shared.cli.failures import CommandFailed, redis_unreachable
from shared.settings import Settings

_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
_REDIS_CONNECT_TIMEOUT = 3.0

T = TypeVar("T")


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "keys", help="create, list and revoke API keys", description="Manage API keys (stored as digests)."
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="create a key and print its secret once")
    create.add_argument("--account", default="default", help="account id the key bills to (default: default)")
    create.add_argument("--plan", help="plan of the key, one of the settings' plans (default: default_plan)")
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


def _run(
    action: Callable[[aredis.Redis, argparse.Namespace], Awaitable[int]],
) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        _check_identifiers(args)
        settings = settings_from_args(args)
        if "plan" in args:
            args.plan = _known_plan(settings, args.plan)
        return asyncio.run(_with_redis(settings.redis_url, lambda client: action(client, args)))

    return handler


async def _with_redis(url: str, body: Callable[[aredis.Redis], Awaitable[T]]) -> T:
    client = aredis.Redis.from_url(url, socket_connect_timeout=_REDIS_CONNECT_TIMEOUT)
    try:
        return await body(client)
    except redis.RedisError as exc:
        raise redis_unreachable(url, exc) from exc
    finally:
        await client.aclose()


def _known_plan(settings: Settings, plan: str | None) -> str:
    if plan is None:
        return settings.default_plan
    if plan not in settings.plans:
        known = ", ".join(settings.plans)
        raise CommandFailed(f"unknown plan {plan!r}; the settings define: {known}", exit_status=2)
    return plan


def _check_identifiers(args: argparse.Namespace) -> None:
    for option in ("account",):
        value = getattr(args, option, None)
        if value is not None and not _IDENTIFIER.match(value):
            raise CommandFailed(
                f"--{option} {value!r} is not a valid id (letters, digits, and _ . : @ -; at most 128)",
                exit_status=2,
            )


async def _create(client: aredis.Redis, args: argparse.Namespace) -> int:
    secret, record = await api_keys.create_key(
        client, account_id=args.account, plan=args.plan, name=args.name
    )
    if args.json:
        print(orjson.dumps({"secret": secret, **_record_json(record)}).decode())
        return 0
    print(
        f"Created key {record.key_id} (account {record.account_id}, plan {record.plan}).\n"
        f"Secret, shown only this once:\n\n    {secret}\n"
    )
    return 0


async def _list(client: aredis.Redis, args: argparse.Namespace) -> int:
    records = await api_keys.list_keys(client, args.account)
    if args.json:
        print(orjson.dumps([_record_json(r) for r in records]).decode())
        return 0
    if not records:
        print("No keys." if args.account is None else f"No keys for account {args.account}.")
        return 0
    rows = [("KEY ID", "ACCOUNT", "PLAN", "STATUS", "CREATED (UTC)", "NAME")]
    rows += [
        (
            r.key_id,
            r.account_id,
            r.plan,
            "revoked" if r.revoked else "active",
            _timestamp(r.created_at),
            r.name,
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


async def _revoke(client: aredis.Redis, args: argparse.Namespace) -> int:
    if not await api_keys.revoke_key(client, args.key_id):
        raise CommandFailed(f"no key with id {args.key_id!r} (see `aiorouter keys list`)")
    print(f"Revoked key {args.key_id}; every ingress stops accepting it within its key cache TTL.")
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


def _timestamp(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S")
