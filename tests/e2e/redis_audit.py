"""An audit of every key in Redis against the lifetime :mod:`shared.keys` states for it.

Each key :mod:`shared.keys` describes has a rule here (:data:`RULES`), and so do rq's keys it names only
in the text of another's description (:data:`RQ_EXTRA`): the key expires within its bound, it exists
only while work is in flight, or it lasts, one per account, API key, pool, deployment or file, with the
check that keeps its size bounded.  :func:`audit` reports every key that breaks its rule, and every key
no rule covers: a key added to the code without a stated lifetime fails it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE, ExecutionRegistry
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.results import Result
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY

from shared import credits, keys
from shared.settings import Settings
from workers.heartbeat import execution_lifetime

PER_REQUEST_BOUND = 8_192  # bytes an ended request's rq record and result may take (docs/operating.md)
WORKER_PROCESSES_AT_MOST = 8  # worker processes an audited system starts, replacements included
RQ_FIRST_SEEN_TTL = 86_400  # rq's IntermediateQueue.set_first_seen

Check = Callable[[redis.Redis, str, Settings], str | None]
"""What is wrong with a key beyond its TTL, or None."""


@dataclass(frozen=True, slots=True)
class Expires:
    """The key carries a TTL of at most ``within(settings)`` seconds, and takes at most ``max_bytes``."""

    within: Callable[[Settings], float]
    max_bytes: int = 0  # 0: no size bound of its own
    check: Check | None = None


@dataclass(frozen=True, slots=True)
class Gone:
    """The key exists only while work is in flight: none is left once the system settles."""


@dataclass(frozen=True, slots=True)
class Lasting:
    """No TTL: there is one per ``per``, never one per request; ``check`` says what keeps its size
    bounded; unless ``grows``, more requests must leave its size unchanged."""

    per: str
    check: Check | None = None
    grows: bool = False


@dataclass(frozen=True, slots=True)
class NotAKey:
    """A pub/sub channel, or a name that is part of other keys."""


Rule = Expires | Gone | Lasting | NotAKey


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _seconds(value: float) -> Callable[[Settings], float]:
    return lambda settings: value


def _job_ttl(settings: Settings) -> float:
    return max(settings.result_ttl, settings.failure_ttl)


def _finished_within_result_ttl(job_key: Callable[[str], str]) -> Check:
    """A finished job's record and result are kept ``result_ttl``; a failed or stopped one's longer."""

    def check(client: redis.Redis, key: str, settings: Settings) -> str | None:
        status = client.hget(job_key(key), "status")
        ttl = int(client.ttl(key))
        if status == JobStatus.FINISHED.value.encode() and ttl > settings.result_ttl + 1:
            return f"finished, yet kept {ttl} s, past result_ttl ({settings.result_ttl} s)"
        return None

    return check


def _stream_capped(cap: int) -> Check:
    def check(client: redis.Redis, key: str, settings: Settings) -> str | None:
        length = int(client.xlen(key))
        return None if length <= cap + 100 else f"{length} entries, past its cap of {cap}"  # MAXLEN ~

    return check


def _entries_expire(client: redis.Redis, key: str, settings: Settings) -> str | None:
    """rq's finished and failed registries: an entry's score is when rq's clean-up drops it."""
    last = client.zrange(key, -1, -1, withscores=True)
    until = float(last[0][1]) if last else 0.0
    if until > time.time() + _job_ttl(settings) + 5:
        return f"an entry kept until {until:.0f}, past {_job_ttl(settings)} s from now"
    return None


def _file_expires(client: redis.Redis, key: str, settings: Settings) -> str | None:
    """A file's record has no TTL: the driver's sweep deletes it at its expiry, so it must be scheduled."""
    file_id = key.removeprefix(keys.file_record(""))
    expires_at = client.zscore(keys.FILES_EXPIRY, file_id)
    if expires_at is None:
        return "no entry in the expiry sweep's set"
    if expires_at > time.time() + settings.batches.file_ttl + 5:
        return f"expires at {expires_at:.0f}, past file_ttl"
    return None


def _index_of(record: Callable[[str], str]) -> Check:
    """An index (a sorted set of ids) whose every member still has its record."""

    def check(client: redis.Redis, key: str, settings: Settings) -> str | None:
        ids = [_text(member) for member in client.zrange(key, 0, -1)]
        dangling = [member for member in ids if not client.exists(record(member))]
        return f"members without a record: {dangling[:5]}" if dangling else None

    return check


def _no_lines_held(client: redis.Redis, key: str, settings: Settings) -> str | None:
    held = int(client.get(key) or 0)
    return None if held == 0 else f"{held} lines held with no batch running"


def _workers_started(client: redis.Redis, key: str, settings: Settings) -> str | None:
    """rq's sets of workers: rq's clean-up drops a worker once its record expired."""
    members = int(client.scard(key))
    return None if members <= WORKER_PROCESSES_AT_MOST else f"{members} workers listed"


def _execution_ttl(settings: Settings) -> float:
    return execution_lifetime(settings)[1]


_JOB = Job.key_for("<job_id>")
_RESULTS = Result.get_key("<job_id>")  # type: ignore[no-untyped-call]  # rq's is untyped
_INTERMEDIATE = IntermediateQueue.get_intermediate_queue_key(keys.rq_queue_key("<pool>"))

RULES: dict[str, Rule] = {  # a KeySpec's name, or for one of rq's keys its pattern -> its rule
    "rq_queue_key": Gone(),
    "RQ_QUEUES_SET": Lasting("rq queue"),
    _JOB: Expires(_job_ttl, PER_REQUEST_BOUND, _finished_within_result_ttl(lambda key: key)),
    _INTERMEDIATE: Gone(),
    "rq_started_registry": Gone(),
    "rq:execution:<job_id>:<execution_id>": Expires(_execution_ttl),
    "rq:finished:<pool>, rq:failed:<pool>": Lasting("rq queue", _entries_expire, grows=True),
    "rq:worker:<worker>": Expires(lambda s: s.worker_dead_after + 60),
    "rq:pubsub:<worker>": NotAKey(),
    "STORE_MARKER": Lasting("Redis"),
    "reply_channel": NotAKey(),
    "CANCEL_CHANNEL": NotAKey(),
    "cancelled_marker": Expires(_seconds(keys.CANCELLED_MARKER_TTL)),
    "worker_alive": Expires(lambda s: s.worker_dead_after),
    "pool_workers": Expires(_seconds(keys.POOL_WORKER_KEPT)),
    "POOLS_SET": Lasting("pool"),
    "pool_minute": Expires(_seconds(keys.POOL_MINUTE_TTL)),
    "api_key": Lasting("API key"),
    "API_KEYS_INDEX": Lasting("API key"),
    "breaker_state": Lasting("deployment"),
    "breaker_failures": Expires(lambda s: s.breaker.window),
    "BREAKER_BLOCKED": Lasting("deployment"),
    "BREAKER_DEPLOYMENTS": Lasting("deployment"),
    "inflight_counts": Expires(lambda s: s.worker_dead_after),
    "inflight_leases": Expires(lambda s: s.worker_dead_after),
    "ttft_stats": Expires(lambda s: s.routing_stats.latency_ttl),
    "provider_slots": Expires(lambda s: s.worker_dead_after),
    "provider_calls": Expires(_seconds(60)),
    "account": Lasting("account"),
    "ACCOUNTS_INDEX": Lasting("account"),
    "dashboard_token": Lasting("account"),
    "account_api_keys": Lasting("account"),
    "account_live_api_keys": Lasting("account"),
    "key_creations": Expires(_seconds(keys.KEY_CREATION_WINDOW_MS / 1000)),
    "rate_limit": Expires(_seconds(60)),
    "credit_balance": Lasting("account"),
    "credit_ledger": Lasting("account", _stream_capped(credits.LEDGER_KEPT), grows=True),
    "credit_reservation": Expires(_seconds(keys.CREDIT_RESERVATION_TOMBSTONE_TTL)),
    "CREDIT_RESERVATIONS": Gone(),
    "usage_records": Lasting("account", _stream_capped(keys.USAGE_RECORDS_MAXLEN), grows=True),
    "USAGE_ALL_RECORDS": Lasting("Redis", _stream_capped(keys.USAGE_ALL_RECORDS_MAXLEN), grows=True),
    "usage_daily": Expires(_seconds(keys.USAGE_DAILY_TTL)),
    "batch_lane": NotAKey(),
    "file_record": Lasting("file", _file_expires),
    "file_batches": Expires(_seconds(keys.FILE_BATCHES_TTL)),
    "account_files": Lasting("account", _index_of(keys.file_record)),
    "FILES_DELETING": Gone(),
    "FILES_EXPIRY": Lasting("Redis", _index_of(keys.file_record)),
    "batch_record": Expires(_seconds(keys.BATCH_RECORD_TTL)),
    "account_batches": Lasting("account", _index_of(keys.batch_record)),
    "BATCHES_ACTIVE": Gone(),
    "batch_inflight": Gone(),
    "batch_results": Gone(),
    "batch_done": Gone(),
    "batch_queued_lines": Lasting("account", _no_lines_held),
    "BATCH_DRIVER_LEASE": Expires(lambda s: s.batches.driver_lease),
    "BATCH_REPLY_CHANNEL": NotAKey(),
}

RQ_EXTRA: dict[str, Rule] = {  # rq's keys that shared.keys names only inside another key's description
    _RESULTS: Expires(
        _job_ttl,
        PER_REQUEST_BOUND,
        _finished_within_result_ttl(lambda key: Job.key_for(key.removeprefix(_RESULTS[: -len("<job_id>")]))),
    ),
    ExecutionRegistry.key_template.format("<job_id>"): Expires(lambda s: _execution_ttl(s) + 60),
    WORKER_EXECUTIONS_KEY_TEMPLATE.format("<worker>"): Expires(lambda s: _execution_ttl(s) + 60),
    REDIS_WORKER_KEYS: Lasting("worker process", _workers_started),
    WORKERS_BY_QUEUE_KEY % "<pool>": Lasting("worker process", _workers_started),
    "rq:clean_registries:<queue>": Expires(_seconds(899)),  # rq's maintenance lock
    f"{_INTERMEDIATE}:first_seen:<job_id>": Expires(_seconds(RQ_FIRST_SEEN_TTL)),  # rq's maintenance
}


@dataclass(frozen=True, slots=True)
class Pattern:
    label: str
    regex: re.Pattern[str]
    literal: int  # characters outside placeholders: the most specific pattern wins
    rule: Rule


def patterns() -> list[Pattern]:
    """Every rule's key pattern (a KeySpec's, or rq's), placeholders matching any text."""
    described = {spec.name or spec.pattern: spec.pattern for spec in keys.described_keys()}
    found: list[Pattern] = []
    for label, rule in {**RULES, **RQ_EXTRA}.items():
        if isinstance(rule, NotAKey):
            continue
        for pattern in described.get(label, label).split(", "):
            parts = re.split(r"<[a-z_]+>", pattern)
            regex = re.compile(".+".join(re.escape(part) for part in parts))
            found.append(Pattern(label, regex, sum(len(part) for part in parts), rule))
    return found


def classify(key: str, table: list[Pattern]) -> Pattern | None:
    matches = [pattern for pattern in table if pattern.regex.fullmatch(key)]
    return max(matches, key=lambda pattern: pattern.literal) if matches else None


def all_keys(client: redis.Redis) -> list[str]:
    return sorted(_text(key) for key in client.scan_iter(count=1000))


def in_flight(client: redis.Redis, table: list[Pattern]) -> dict[str, int]:
    """The keys that exist only while work is in flight (rule :class:`Gone`), with their TTLs."""
    rules = {key: getattr(classify(key, table), "rule", None) for key in all_keys(client)}
    return {key: int(client.ttl(key)) for key, rule in rules.items() if isinstance(rule, Gone)}


def size(client: redis.Redis, key: str) -> int:
    """A key's length, by its type (-1 for a type without one)."""
    kind = _text(client.type(key))
    measure = {"string": client.strlen, "hash": client.hlen, "set": client.scard, "zset": client.zcard}
    measure |= {"list": client.llen, "stream": client.xlen}
    return int(measure[kind](key)) if kind in measure else -1


def audit(client: redis.Redis, settings: Settings, table: list[Pattern]) -> tuple[list[str], dict[str, int]]:
    """What breaks a rule, one line per key; and the size of every lasting key that must not grow."""
    problems: list[str] = []
    lasting: dict[str, int] = {}
    for key in all_keys(client):
        found = classify(key, table)
        ttl = int(client.ttl(key))
        if ttl == -2:
            continue  # expired since the scan
        if found is None:
            problems.append(f"{key}: no rule, not in shared.keys ({_text(client.type(key))}, TTL {ttl})")
            continue
        rule, label = found.rule, found.label
        problem: str | None = None
        if isinstance(rule, Gone):
            problem = f"left once no work was in flight (TTL {ttl})"
        elif isinstance(rule, Expires):
            used = int(client.memory_usage(key, samples=0) or 0)
            if ttl < 0 or ttl > rule.within(settings) + 1:
                problem = f"TTL {ttl} s, bound {rule.within(settings):.0f} s"
            elif rule.max_bytes and used > rule.max_bytes:
                problem = f"{used} bytes, bound {rule.max_bytes}"
            elif rule.check is not None:
                problem = rule.check(client, key, settings)
        elif isinstance(rule, Lasting):
            problem = f"lasting, yet TTL {ttl}" if ttl != -1 else None
            if problem is None and rule.check is not None:
                problem = rule.check(client, key, settings)
            if not rule.grows:
                lasting[key] = size(client, key)
        if problem:
            problems.append(f"{key} ({label}): {problem}")
    return problems, lasting


def per_request_bytes(client: redis.Redis) -> dict[str, int]:
    """The memory of each ended job's rq record and result together, by job id."""
    prefix = Job.key_for("")
    used: dict[str, int] = {}
    for key in client.scan_iter(match=f"{prefix}*"):
        job_id = _text(key).removeprefix(prefix)
        result = Result.get_key(job_id)  # type: ignore[no-untyped-call]  # rq's is untyped
        used[job_id] = int(client.memory_usage(key, samples=0) or 0)
        used[job_id] += int(client.memory_usage(result, samples=0) or 0)
    return used
