"""Credit: balances in integer micro-USD, reserved before a request runs and settled when it ends.

Each account's credit hash (:func:`shared.keys.credit_balance`) holds ``balance`` (what it owns),
``reserved`` (held by open reservations) and ``spent``; what a new request may use is
``balance - reserved``.  The life of one request's credit:

1. Admission holds its worst-case cost atomically (:class:`PendingReservation`, see
   :mod:`ingress.admission`), or refuses it with :class:`InsufficientQuota` (402) — before anything is
   queued.
2. The worker that answers charges the actual cost and releases the rest of the hold (:func:`settle_call`,
   in the round trip that publishes the answer): a cost above the hold (the prompt estimate fell short)
   is charged beyond it from the available credit, never from other holds nor below zero.
   :func:`release` (failure, cancellation) releases it all.  Both are idempotent.
3. A reservation nobody settles (its processes died) is released by :func:`sweep_expired` once its
   deadline has passed.  The deadline is a lease: :func:`reservation_ttl` covers the request's wait for a
   worker, and the worker running its job renews it (:func:`extend_call`) every heartbeat or so, so a
   hold outlives its processes by at most ``reservation_lease``.

Every step is one Lua script, so N concurrent requests can never hold or spend more than the balance.
Credit is added with :func:`add_credit`, which appends a ledger entry in the same script.  A price of
``p`` USD per million tokens is ``p`` micro-USD per token, so a cost is ``tokens * price`` rounded up.

Balances are only as durable as Redis: run it with the append-only file on (``appendonly yes``;
``appendfsync everysec`` loses at most a second of writes on a crash, ``always`` loses none at the cost of
an fsync per write), keep RDB snapshots as backups, and never let it evict keys
(``maxmemory-policy noeviction``), or balances, ledgers and reservations could silently disappear.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import orjson
import redis.asyncio as aredis

from shared import keys
from shared.errors import InsufficientQuota, InvalidRequest, NotFound
from shared.lua import LuaScript, ScriptCall
from shared.settings import ModelEntry, Settings

MICROS_PER_USD = 1_000_000
MAX_AMOUNT = 1_000_000_000 * MICROS_PER_USD
"""The largest single grant (a billion USD): far inside what Redis integers and Lua numbers hold exactly."""
MAX_BALANCE = 9_000_000_000 * MICROS_PER_USD
"""The most an account's balance holds (below 2^53 micro-USD, which Lua's numbers hold exactly): a grant
that would take it further is refused."""
LEDGER_KEPT = 10_000
"""Entries an account's credit ledger keeps (about: Redis trims whole stream nodes); older ones go."""
_PLAIN_DECIMAL = re.compile(r"(?P<sign>-?)(?=\.?[0-9])(?P<whole>[0-9]*)(?:\.(?P<fraction>[0-9]*))?")
_MAX_AMOUNT_CHARS = 32  # "1000000000.000000" is 17; trailing zeros are allowed, not unbounded ones
_RESERVE = LuaScript.load("credit_reserve")
_SETTLE = LuaScript.load("credit_settle")
_EXPIRE = LuaScript.load("credit_expire")
_ADD = LuaScript.load("credit_add")
_EXTEND = LuaScript.load("credit_extend")

SettleOutcome = Literal["settled", "late", "already", "unknown"]


@dataclass(frozen=True, slots=True)
class Balance:
    account_id: str
    balance: int
    reserved: int
    spent: int

    @property
    def available(self) -> int:
        return self.balance - self.reserved

    def to_json(self) -> dict[str, Any]:
        return {
            "balance_micros": self.balance,
            "reserved_micros": self.reserved,
            "available_micros": self.available,
            "spent_micros": self.spent,
            "balance_usd": usd(self.balance),
            "available_usd": usd(self.available),
        }


@dataclass(frozen=True, slots=True)
class Reservation:
    id: str
    account_id: str
    amount: int  # micro-USD held
    deadline_ms: int  # Redis TIME after which the sweep may release it

    def to_wire(self) -> dict[str, Any]:
        """For the job record, so that the worker that finishes the request can settle it."""
        return {
            "id": self.id,
            "account_id": self.account_id,
            "amount": self.amount,
            "deadline_ms": self.deadline_ms,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Reservation:
        return cls(
            id=str(data["id"]),
            account_id=str(data["account_id"]),
            amount=int(data["amount"]),
            deadline_ms=int(data["deadline_ms"]),
        )


@dataclass(frozen=True, slots=True)
class Settlement:
    outcome: SettleOutcome
    charged: int  # micro-USD taken from the balance


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: str  # the stream entry id; its first part is the unix time in ms
    amount: int
    balance: int  # after this entry
    reason: str
    actor: str

    @property
    def at_ms(self) -> int:
        return int(self.id.split("-")[0])

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at_ms": self.at_ms,
            "amount_micros": self.amount,
            "balance_micros": self.balance,
            "reason": self.reason,
            "actor": self.actor,
        }


# --- prices and estimates ----------------------------------------------------------------------------


def price_micros(tokens: int, price_per_m: float) -> int:
    """Cost in micro-USD of ``tokens`` at ``price_per_m`` USD per million tokens, rounded up."""
    return math.ceil(Decimal(tokens) * Decimal(str(price_per_m)))


def cost_micros(model: ModelEntry, prompt_tokens: int, completion_tokens: int) -> int:
    """What a completion costs at the model's catalog prices, with no prompt tokens from a cache (the
    most it can cost: a model's cached input price is at most its input price)."""
    return price_micros(prompt_tokens, model.input_price_per_m) + price_micros(
        completion_tokens, model.output_price_per_m
    )


def tokens_cost(
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int,
    *,
    input_price_per_m: float,
    output_price_per_m: float,
    cached_input_price_per_m: float | None,
) -> int:
    """Micro-USD of a completion's tokens: the prompt's cached tokens at the cached input price (the input
    price when the model has none), the rest of the prompt at the input price, the completion (reasoning
    tokens included, as upstreams count them) at the output price."""
    cached = min(max(cached_tokens, 0), prompt_tokens)
    cached_price = input_price_per_m if cached_input_price_per_m is None else cached_input_price_per_m
    return (
        price_micros(prompt_tokens - cached, input_price_per_m)
        + price_micros(cached, cached_price)
        + price_micros(completion_tokens, output_price_per_m)
    )


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """A deliberately high estimate of a request's prompt tokens: one per 3 bytes of its messages and
    tools as JSON (typical text is about 4 bytes per token, and the JSON syntax adds more)."""
    return math.ceil(len(orjson.dumps([body.get("messages"), body.get("tools")])) / 3)


def max_completion_tokens(settings: Settings, model: ModelEntry, body: dict[str, Any]) -> int:
    """The completion tokens a request may produce: its own cap per choice (else the configured default)
    times its ``n`` choices, each of which is billed."""
    per_choice = min(settings.credit_default_max_tokens, model.context_length)
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            per_choice = min(value, model.context_length)
            break
    n = body.get("n")
    choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
    return per_choice * choices


def reservation_ttl(settings: Settings, *, attempts: int = 1) -> float:
    """Seconds a new reservation is held unless renewed: a request's ``attempts`` may each wait twice
    ``queue_timeout`` for a worker (:meth:`ingress.relay.CompletionRelay.wait_for_start`), then one lease;
    the worker running the job renews it from there (:func:`extend_call`)."""
    return 2 * settings.queue_timeout * max(1, attempts) + settings.reservation_lease


def parse_usd(value: Any, *, param: str = "amount_usd") -> int:
    """A positive USD amount as micro-USD: a JSON integer, a JSON number written as a plain decimal, or a
    plain decimal string (ASCII digits, one optional point, at most 6 decimals); 400 otherwise.

    No exponents, digit separators (``1_000``), non-ASCII digits, NaN or Infinity: what the operator
    typed is what is granted, and nothing is ever computed from an unbounded number.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequest('An amount must be a number of USD, e.g. 10 or "12.50".', param=param)
    if isinstance(value, int):
        if abs(value) > MAX_AMOUNT:
            raise InvalidRequest(f"An amount is at most {usd(MAX_AMOUNT)} USD.", param=param)
        return check_positive(value * MICROS_PER_USD, param=param)
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > MAX_AMOUNT / MICROS_PER_USD:
            raise InvalidRequest(f"An amount is a finite number of USD up to {usd(MAX_AMOUNT)}.", param=param)
        value = format(Decimal(repr(value)), "f")  # the shortest exact digits, without an exponent
    text = value.strip()
    match = _PLAIN_DECIMAL.fullmatch(text) if len(text) <= _MAX_AMOUNT_CHARS else None
    if match is None:
        raise InvalidRequest(
            f"Cannot read {text[:40]!r} as an amount of USD: write a plain decimal such as 12.50.",
            param=param,
        )
    sign, whole, fraction = match.group("sign"), match.group("whole"), (match.group("fraction") or "")
    fraction = fraction.rstrip("0")
    if len(fraction) > 6:
        raise InvalidRequest("An amount must be a finite number of USD with at most 6 decimals.", param=param)
    micros = int(whole or "0") * MICROS_PER_USD + int(fraction.ljust(6, "0"))
    return check_positive(-micros if sign else micros, param=param)


def check_positive(micros: Any, *, param: str = "amount_micros") -> int:
    """``micros`` if it is a whole number of micro-USD from 1 to :data:`MAX_AMOUNT`; a 400 naming the
    bounds in the unit of ``param`` otherwise."""
    if isinstance(micros, bool) or not isinstance(micros, int) or not 0 < micros <= MAX_AMOUNT:
        if param == "amount_micros":
            message = f"An amount must be a whole number of micro-USD from 1 to {MAX_AMOUNT}."
        else:
            message = f"An amount must be more than 0 and at most {usd(MAX_AMOUNT)} USD."
        raise InvalidRequest(message, param=param)
    return micros


# --- balances ----------------------------------------------------------------------------------------


async def get_balance(redis: aredis.Redis, account_id: str) -> Balance:
    balance, reserved, spent = await redis.hmget(
        keys.credit_balance(account_id), ["balance", "reserved", "spent"]
    )
    return Balance(account_id, int(balance or 0), int(reserved or 0), int(spent or 0))


async def get_balances(redis: aredis.Redis, account_ids: list[str]) -> list[Balance]:
    """The balances of many accounts in one round trip, in the same order."""
    async with redis.pipeline(transaction=False) as pipe:
        for account_id in account_ids:
            pipe.hmget(keys.credit_balance(account_id), ["balance", "reserved", "spent"])
        rows = await pipe.execute()
    return [
        Balance(account_id, int(balance or 0), int(reserved or 0), int(spent or 0))
        for account_id, (balance, reserved, spent) in zip(account_ids, rows, strict=True)
    ]


async def add_credit(
    redis: aredis.Redis, account_id: str, amount: int, *, reason: str = "", actor: str = ""
) -> tuple[Balance, LedgerEntry]:
    """Add ``amount`` micro-USD (> 0) to an existing account, with its ledger entry."""
    check_positive(amount)
    added, balance, entry_id = await _ADD(
        redis,
        [keys.account(account_id), keys.credit_balance(account_id), keys.credit_ledger(account_id)],
        [amount, reason, actor, MAX_BALANCE, LEDGER_KEPT],
    )
    if not added:
        raise NotFound(f"No account with id {account_id!r}.", code="account_not_found")
    if added == -1:
        raise InvalidRequest(
            f"The balance would exceed {usd(MAX_BALANCE)} USD (it holds {usd(int(balance))}).",
            code="balance_limit_exceeded",
        )
    entry = LedgerEntry(id=_text(entry_id), amount=amount, balance=int(balance), reason=reason, actor=actor)
    return await get_balance(redis, account_id), entry


async def ledger(redis: aredis.Redis, account_id: str, *, count: int = 100) -> list[LedgerEntry]:
    """An account's most recent ledger entries, newest first."""
    rows = await redis.xrevrange(keys.credit_ledger(account_id), count=count)
    entries = []
    for entry_id, fields in rows or ():
        text = {_text(k): _text(v) for k, v in (fields or {}).items()}
        entries.append(
            LedgerEntry(
                id=_text(entry_id),
                amount=int(text["amount"]),
                balance=int(text["balance"]),
                reason=text.get("reason", ""),
                actor=text.get("actor", ""),
            )
        )
    return entries


# --- reservations ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingReservation:
    """A reservation about to be made: its script call (to make alone or among others in one round
    trip, see :func:`shared.lua.run_together`) and :meth:`outcome`, which reads the reply."""

    id: str
    account_id: str
    amount: int
    call: ScriptCall
    ttl_ms: int = 0  # how long the hold lasts unless settled first

    def expected(self) -> Reservation:
        """The reservation as it will be once held, before Redis answered: its deadline the local
        clock's estimate (Redis's own clock decides when the sweep may release it)."""
        deadline_ms = int(time.time() * 1000) + self.ttl_ms
        return Reservation(
            id=self.id, account_id=self.account_id, amount=self.amount, deadline_ms=deadline_ms
        )

    @classmethod
    def prepare(
        cls, settings: Settings, account_id: str, amount: int, *, ttl: float | None = None, attempts: int = 1
    ) -> PendingReservation:
        """Hold ``amount`` micro-USD of the account's available credit for ``ttl`` seconds at most
        (default :func:`reservation_ttl`) unless settled first."""
        if amount < 0:
            raise ValueError(f"cannot reserve a negative amount ({amount})")
        reservation_id = "res_" + secrets.token_hex(12)
        ttl_ms = math.ceil((reservation_ttl(settings, attempts=attempts) if ttl is None else ttl) * 1000)
        call = ScriptCall(
            _RESERVE,
            [
                keys.credit_balance(account_id),
                keys.credit_reservation(reservation_id),
                keys.CREDIT_RESERVATIONS,
            ],
            [amount, ttl_ms, reservation_id, account_id],
        )
        return cls(reservation_id, account_id, amount, call, ttl_ms)

    def outcome(self, reply: Any) -> Reservation:
        """The reservation held, or 402 ``insufficient_quota``."""
        held, available, deadline = reply
        if not held:
            raise InsufficientQuota(
                f"Insufficient credits: this request may cost up to {usd(self.amount)} USD and the account "
                f"has {usd(max(0, int(available)))} USD available. Add credit, or lower max_tokens."
            )
        return Reservation(
            id=self.id, account_id=self.account_id, amount=self.amount, deadline_ms=int(deadline)
        )


async def settle(redis: aredis.Redis, reservation: Reservation, actual: int) -> Settlement:
    """Charge the actual cost (at most the amount held) and release the rest of the hold."""
    return settlement_from_reply(await settle_call(reservation, actual).run(redis))


def settle_call(reservation: Reservation, actual: int, *, heard_on: str | None = None) -> ScriptCall:
    """The script call behind :func:`settle` (``actual`` 0 releases it all); idempotent, so it may ride
    in a pipeline with other commands (:meth:`ScriptCall.command`).  With ``heard_on`` (the reply channel
    the answer is published on, in the same transaction) it charges only while someone subscribes to
    it, and releases the hold otherwise: an answer nobody can receive is not paid for."""
    args: list[Any] = [max(0, actual), reservation.id, keys.CREDIT_RESERVATION_TOMBSTONE_TTL]
    if heard_on is not None:
        args.append(heard_on)
    return ScriptCall(
        _SETTLE,
        [
            keys.credit_balance(reservation.account_id),
            keys.credit_reservation(reservation.id),
            keys.CREDIT_RESERVATIONS,
        ],
        args,
    )


def extend_call(reservation: Reservation, lease: float) -> ScriptCall:
    """Make a held reservation last at least ``lease`` more seconds (a no-op once settled or expired)."""
    return ScriptCall(
        _EXTEND,
        [keys.credit_reservation(reservation.id), keys.CREDIT_RESERVATIONS],
        [reservation.id, math.ceil(lease * 1000)],
    )


def settlement_from_reply(reply: Any) -> Settlement:
    outcome, charged = reply
    return Settlement(outcome=_outcome(outcome), charged=int(charged))


async def release(redis: aredis.Redis, reservation: Reservation) -> Settlement:
    """Release the whole hold: the request failed or was cancelled before it cost anything."""
    return await settle(redis, reservation, 0)


async def sweep_expired(redis: aredis.Redis, *, batch: int = 500) -> int:
    """Release every reservation past its deadline; returns how many were released."""
    seconds, micros = await redis.time()
    now_ms = seconds * 1000 + micros // 1000
    released = 0
    while ids := await redis.zrangebyscore(keys.CREDIT_RESERVATIONS, "-inf", now_ms, start=0, num=batch):
        async with redis.pipeline(transaction=False) as pipe:
            for reservation_id in ids:
                pipe.hget(keys.credit_reservation(_text(reservation_id)), "account")
            accounts = await pipe.execute()
        for reservation_id, account_id in zip(ids, accounts, strict=True):
            script_keys = [
                keys.credit_balance(_text(account_id or b"")),
                keys.credit_reservation(_text(reservation_id)),
                keys.CREDIT_RESERVATIONS,
            ]
            args = [_text(reservation_id), keys.CREDIT_RESERVATION_TOMBSTONE_TTL]
            released += int(await _EXPIRE(redis, script_keys, args))
        if len(ids) < batch:
            break
    return released


def _outcome(value: Any) -> SettleOutcome:
    text = _text(value)
    for known in ("settled", "late", "already", "unknown"):
        if text == known:
            return known
    raise ValueError(f"unexpected settle outcome {text!r}")


def usd(micros: int) -> str:
    """Micro-USD as an exact decimal string of USD, e.g. ``"12.500000"``."""
    return f"{Decimal(micros) / MICROS_PER_USD:.6f}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
