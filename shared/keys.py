"""Every Redis key, channel name and TTL that AIOrouter uses, in one place, each with what it is for.

rq owns its own keys (``rq:queue:*``, ``rq:job:*``, registries, workers); the helpers here that name
them ask rq, so that ``rq info`` and rq-dashboard see exactly what we write.  Nobody else formats a
Redis key.

Next to each definition, :func:`_key` (on a function) or :func:`_describe` (after a constant) records its
Redis type, what it is for, which parts write and read it, and its TTL; :func:`described_keys` returns
them, rq's own keys that our code touches included, and ``docs/keys_table.py`` renders them as the key
table of ``docs/architecture.md`` (a test fails when that table is stale or a key is not described).
Recording happens once, at import: the functions themselves are unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from rq import command as rq_command
from rq import defaults as rq_defaults
from rq import executions as rq_executions
from rq import worker_registration as rq_worker_registration
from rq.executions import ExecutionRegistry
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.queue import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.results import Result
from rq.worker.base import BaseWorker

PREFIX = "aior"

# --- what each key is, for the map ----------------------------------------------------------------

KeyType = Literal["list", "set", "sorted set", "hash", "string", "stream", "channel"]


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One Redis key (or pub/sub channel) as ``docs/architecture.md`` lists it."""

    name: str  # its definition in this module; "" for one of rq's keys we only describe
    pattern: str  # the key with ``<placeholders>`` for its arguments
    type: KeyType
    what: str
    writer: str  # which parts write it, by module
    reader: str
    ttl: str


_SPECS: list[KeySpec] = []  # filled at import by _key/_describe below, read through described_keys()

_KeyFunction = TypeVar("_KeyFunction", bound=Callable[..., str])


def described_keys() -> tuple[KeySpec, ...]:
    """Every key and channel described in this module, in the order they are defined."""
    return tuple(_SPECS)


def _key(
    type_: KeyType, what: str, *, writer: str, reader: str, ttl: str = "none"
) -> Callable[[_KeyFunction], _KeyFunction]:
    """Describe the key a function names; the function is returned unchanged."""

    def describe(function: _KeyFunction) -> _KeyFunction:
        placeholders = [f"<{name}>" for name in inspect.signature(function).parameters]
        pattern = function(*placeholders)
        _SPECS.append(KeySpec(function.__name__, pattern, type_, what, writer, reader, ttl))
        return function

    return describe


def _describe(
    name: str, type_: KeyType, what: str, *, writer: str, reader: str, ttl: str = "none", pattern: str = ""
) -> None:
    """Describe the constant ``name`` of this module or, with ``pattern`` and no name, one of rq's keys."""
    _SPECS.append(KeySpec(name, pattern or globals()[name], type_, what, writer, reader, ttl))


# --- rq's keys -----------------------------------------------------------------------------------


@_key(
    "list",
    "a pool's queue of job ids (rq's queue; the pool is the provider)",
    writer="ingress: `ingress.admission` (RPUSH, in `admit_enqueue.lua`), `ingress.job_control` (RPUSH, "
    "LREM on withdraw); workers: `workers.worker` (LPUSH back)",
    reader="workers: `workers.dequeue` (BLMOVE, LMOVE); ingress: `shared.routing_state`, admin (LLEN); "
    "KEDA's redis trigger (`deploy/kubernetes/worker-*.yaml`)",
)
def rq_queue_key(pool: str) -> str:
    """The rq list a pool's jobs wait in."""
    return f"{Queue.redis_queue_namespace_prefix}{pool}"


RQ_QUEUES_SET = Queue.redis_queues_keys
_describe(
    "RQ_QUEUES_SET",
    "set",
    "every rq queue's key",
    writer="ingress: `shared.jobs` (with each enqueue)",
    reader="rq's tools (`rq info`, rq-dashboard)",
)
_describe(
    "",
    "hash",
    "one job: its completion request until a worker loads it, then a diagnostic copy; status and times "
    "(rq's job record); one field of ours, `shared.jobs.REPLY_CHANNEL_FIELD`, names its reply channel "
    "(a batch line's has none)",
    pattern=Job.key_for("<job_id>"),
    writer="ingress: `shared.jobs` (enqueue), `ingress.job_control` (DEL on withdraw, `job_withdraw.lua`); "
    "workers: `workers.bookkeeping` (started, finished, failed), `shared.jobs` (the diagnostic copy)",
    reader="workers: `workers.dequeue` (in the move's round trip, `job_take_read.lua`, which asks "
    "`PUBSUB NUMSUB` of the channel it names), `workers.worker` (at start); rq's tools",
    ttl="none until it ends; then `result_ttl` (finished) or `failure_ttl` (failed)",
)
_describe(
    "",
    "list",
    "ids a worker took off the queue and has not started yet (rq's intermediate queue)",
    pattern=IntermediateQueue.get_intermediate_queue_key(rq_queue_key("<pool>")),
    writer="workers: `workers.dequeue` (BLMOVE target), `workers.bookkeeping` (LREM at start)",
    reader="rq's registry clean-up (fails what a dead worker left there); workers: `workers.dequeue` "
    "(its tail, in `job_take_read.lua`)",
)


@_key(
    "sorted set",
    f"running jobs (rq's started registry; each run's record is under "
    f"`{ExecutionRegistry.key_template.format('<job_id>')}`)",
    writer="workers: `workers.bookkeeping` (at start, from the heartbeat, at the end)",
    reader="rq's registry clean-up (run by workers); rq's tools; admin (`/admin/pools/stats`, "
    "`/admin/pools`: ZCARD, batch lanes too); KEDA's redis trigger (ZCARD); ingress: `ingress.metrics`",
    ttl=(
        "entries expire twice `worker_dead_after` (at least three heartbeats) plus two heartbeat "
        "intervals after their last renewal, every three heartbeats"
    ),
)
def rq_started_registry(queue: str) -> str:
    """rq's sorted set of the jobs of one rq queue (a pool's, or its batch lane's) a worker runs now
    (job id -> when its entry expires)."""
    return str(StartedJobRegistry.key_template.format(queue))


_describe(
    "",
    "hash",
    "one run of a job (rq's execution record: worker, times); its job's `"
    + ExecutionRegistry.key_template.format("<job_id>")
    + "` and its worker's `"
    + rq_executions.WORKER_EXECUTIONS_KEY_TEMPLATE.format("<worker>")
    + "` list the runs",
    pattern=f"{rq_defaults.RQ_KEY_PREFIX}:execution:<job_id>:<execution_id>",
    writer="workers: `workers.bookkeeping` (at start, from the heartbeat; deleted at the end)",
    reader="rq's registry clean-up and tools",
    ttl="the execution's heartbeat TTL (its sets: that plus 60 s), renewed by the heartbeat",
)
_RESULTS = Result.get_key("<job_id>")  # type: ignore[no-untyped-call]  # rq's is untyped
_describe(
    "",
    "sorted set",
    f"ended jobs (rq's finished and failed registries; results are under `{_RESULTS}`)",
    pattern=f"{FinishedJobRegistry.key_template.format('<pool>')}, "
    f"{FailedJobRegistry.key_template.format('<pool>')}",
    writer="workers: `workers.bookkeeping` (at the end of each job)",
    reader="rq's tools",
    ttl="entries kept `result_ttl` (finished) or `failure_ttl` (failed)",
)
_describe(
    "",
    "hash",
    f"one worker process and its state (rq's worker record; `{BaseWorker.redis_workers_keys}` lists them)",
    pattern=f"{BaseWorker.redis_worker_namespace_prefix}<worker>",
    writer="workers: rq's `register_birth`/`register_death` (also in the sets `"
    + BaseWorker.redis_workers_keys
    + "` and `"
    + rq_worker_registration.WORKERS_BY_QUEUE_KEY % "<pool>"
    + "`), `workers.bookkeeping` (heartbeats)",
    reader="rq's tools and registry clean-up",
    ttl="about `worker_dead_after` + 60 s, refreshed every heartbeat",
)
_describe(
    "",
    "channel",
    "rq's commands to one worker: stop a job, shut down",
    pattern=rq_command.PUBSUB_CHANNEL_TEMPLATE % "<worker>",
    writer="operators: rq's `send_stop_job_command`, `send_shutdown_command`",
    reader="workers: `workers.stop_requests`",
    ttl="-",
)

# --- the store itself (shared/store_marker.py) ----------------------------------------------------

STORE_MARKER = f"{PREFIX}:store"
"""String: the random id of this Redis' data, written by the first process to start on it; its loss
while processes run means Redis lost its data."""
_describe(
    "STORE_MARKER",
    "string",
    "the random id of this Redis' data; gone or changed while processes run: Redis lost its data",
    writer="ingress, workers: `shared.store_marker` (the first process to start on an empty Redis)",
    reader="ingress (readiness, every 5 s), workers (every 5 s): `shared.store_marker`",
)


# --- request/response traffic ---------------------------------------------------------------------

_BUNDLED_REPLIES = f"{PREFIX}:replies:"  # reply channels whose reader takes bundles (takes_bundles)


@_key(
    "channel",
    "one ingress process' replies: the S, C, D, E frames of its requests",
    writer="workers: `workers.publisher`",
    reader="ingress: `ingress.reply_hub` (one subscription per process); its subscribers counted "
    "(`PUBSUB NUMSUB`) by workers: `workers.dequeue` (as a job is taken, `job_take_read.lua`), "
    "`workers.worker` (heartbeat), `workers.settlement` (`credit_settle.lua`, with the final frame)",
    ttl="-",
)
def reply_channel(ingress_id: str) -> str:
    """The one pub/sub channel an ingress process listens on; workers publish every event of its
    requests there (the request id is inside each frame), bundled (:func:`takes_bundles`)."""
    return f"{_BUNDLED_REPLIES}{ingress_id}"


def takes_bundles(channel: str) -> bool:
    """Whether workers may bundle frames (:mod:`shared.events`) on reply channel ``channel``: an ingress'
    channel (``aior:replies:...``), and the batch lines' (nobody reads it).  A channel named
    ``aior:reply:<ingress>`` belongs to an ingress that predates bundles: one frame per message."""
    return channel.startswith(_BUNDLED_REPLIES) or channel == BATCH_REPLY_CHANNEL


CANCEL_CHANNEL = f"{PREFIX}:cancel"
"""Broadcast channel: ingress publishes a job id there when the client went away; the worker that
runs it stops the upstream call."""
_describe(
    "CANCEL_CHANNEL",
    "channel",
    "job ids whose client went away",
    writer="ingress: `ingress.job_control`",
    reader="workers: `workers.stop_requests`",
    ttl="-",
)


_CANCELLED_MARKER_PREFIX = f"{PREFIX}:cancelled:"


@_key(
    "string",
    "a cancelled job, so a worker that dequeues it later drops it",
    writer="ingress: `ingress.job_control`",
    reader="workers: `workers.dequeue` (in the move's round trip), `workers.worker` (at start)",
    ttl="600 s (`CANCELLED_MARKER_TTL`)",
)
def cancelled_marker(job_id: str) -> str:
    """Set when a job is cancelled, so a worker that dequeues it afterwards drops it at once."""
    return f"{_CANCELLED_MARKER_PREFIX}{job_id}"


def job_read_prefixes() -> tuple[str, str]:
    """What a script that finds a job by its id prefixes the id with: rq's job hash, the cancel marker."""
    return Job.redis_job_namespace_prefix, _CANCELLED_MARKER_PREFIX


CANCELLED_MARKER_TTL = 600

# --- worker liveness ------------------------------------------------------------------------------


@_key(
    "string",
    "a worker process is alive; its expiry means the worker is lost",
    writer="workers: `workers.liveness` (thread), `workers.bookkeeping` (DEL on departure)",
    reader="ingress: `ingress.watchdog`",
    ttl="`worker_dead_after`, refreshed every `worker_heartbeat_interval`",
)
def worker_alive(worker_name: str) -> str:
    """A key each worker process refreshes every heartbeat; its expiry means the worker is dead."""
    return f"{PREFIX}:alive:{worker_name}"


@_key(
    "sorted set",
    "a pool's workers by the time of their last heartbeat",
    writer="workers: `workers.liveness`, `workers.bookkeeping` (ZREM on departure)",
    reader="ingress: `ingress.health` (`/readyz?verbose`), admin (`/admin/pools`), "
    "`ingress.metrics` (on scrape)",
    ttl="an hour after the last heartbeat of any of its workers; members an hour without one are dropped "
    "(`POOL_WORKER_KEPT`; readers skip members older than `worker_dead_after`)",
)
def pool_workers(pool: str) -> str:
    """Sorted set: worker name -> unix time of its last heartbeat, per pool."""
    return f"{PREFIX}:pool:{pool}:workers"


POOL_WORKER_KEPT = 3600
"""Seconds a pool's set keeps a worker that stopped beating without departing (killed), and the set
itself after its last heartbeat: far past ``worker_dead_after``, so no reader misses a live worker."""


POOLS_SET = f"{PREFIX}:pools"
"""Set of every pool name that has had a worker, for readiness and operator views."""
_describe(
    "POOLS_SET",
    "set",
    "every pool that has had a worker",
    writer="workers: `workers.liveness`",
    reader="ingress: `ingress.health`, admin (`/admin/pools`)",
)

# --- per-pool statistics (shared/pool_stats.py) ----------------------------------------------------


@_key(
    "hash",
    "a pool's jobs of one minute by outcome: `t<i>` (TTFT bucket i), `ok` (no content), `err`, `gone`",
    writer="workers: `workers.completion`, `workers.worker` via `shared.pool_stats` (with each job's end)",
    reader="admin (`/admin/pools/stats`), the operator's Dashboard",
    ttl="15 minutes (`POOL_MINUTE_TTL`)",
)
def pool_minute(pool: str, minute: str) -> str:
    """Hash: outcome -> jobs of one pool that ended in one minute (``minute``: unix time // 60)."""
    return f"{PREFIX}:poolstats:{pool}:{minute}"


POOL_MINUTE_TTL = 900

# --- API keys -------------------------------------------------------------------------------------


@_key(
    "hash",
    "one API key's record (account, plan, name, revoked, last used), by digest",
    writer="`ingress.api_keys` (create, revoke; from the CLI, admin API, Dashboard); "
    "ingress: `shared.ratelimit` (`last_used`)",
    reader="ingress: `ingress.auth` (cached `key_cache_ttl`); control plane",
)
def api_key(digest: str) -> str:
    """Hash: the record of one API key, by the hex SHA-256 digest of its secret."""
    return f"{PREFIX}:apikey:{digest}"


API_KEYS_INDEX = f"{PREFIX}:apikeys"
"""Hash: key id -> digest, for listing and revoking by id."""
_describe(
    "API_KEYS_INDEX",
    "hash",
    "key id → digest, to list and revoke keys by id",
    writer="`ingress.api_keys` (create)",
    reader="`ingress.api_keys` (list, revoke)",
)

# --- circuit breaker (shared/breaker.py) ----------------------------------------------------------


@_key(
    "hash",
    "one deployment's breaker: open until, probe until, trips",
    writer="workers: `shared.breaker` (via `workers.guarded_provider`)",
    reader="workers: `shared.breaker`; operators: `aiorouter breakers`, `/admin/breakers`",
)
def breaker_state(deployment_id: str) -> str:
    """Hash: one deployment's breaker (``open_until``/``probe_until`` in ms of Redis TIME, ``trips``)."""
    return f"{PREFIX}:breaker:{deployment_id}"


@_key(
    "sorted set",
    "one deployment's recent failures",
    writer="workers: `shared.breaker`",
    reader="workers: `shared.breaker`; operators (breaker views)",
    ttl="the breaker's `window`, from the last failure",
)
def breaker_failures(deployment_id: str) -> str:
    """Sorted set: one deployment's recent failures (member = sequence number, score = ms of Redis TIME)."""
    return f"{PREFIX}:breaker:{deployment_id}:failures"


BREAKER_BLOCKED = f"{PREFIX}:breakers:blocked"
"""Sorted set: deployment id -> ms (Redis TIME) until which routing must skip it (cooling down, or its one
half-open probe is in flight).  The one key the ingress' cheap bulk read looks at."""
_describe(
    "BREAKER_BLOCKED",
    "sorted set",
    "deployments routing must skip, until when",
    writer="workers: `shared.breaker`",
    reader="ingress: `ingress.open_set` (every `open_set_refresh`); workers: `workers.dequeue`, "
    "`workers.worker` (with each job's start reads)",
    ttl="none (past deadlines are ignored)",
)

BREAKER_DEPLOYMENTS = f"{PREFIX}:breakers"
"""Set of every deployment id that ever recorded a failure, for the operator view."""
_describe(
    "BREAKER_DEPLOYMENTS",
    "set",
    "every deployment that ever failed",
    writer="workers: `shared.breaker`",
    reader="operators: breaker views",
)

# --- routing statistics (shared/routing_state.py) -------------------------------------------------


@_key(
    "hash",
    "worker → jobs it runs on a deployment now",
    writer="workers: `shared.routing_state` (via `workers.guarded_provider`, leases renewed every heartbeat)",
    reader="ingress: `shared.routing_state` (`least-busy`)",
    ttl="`worker_dead_after` (a lease)",
)
def inflight_counts(deployment_id: str) -> str:
    """Hash: worker name -> jobs that worker runs on the deployment right now."""
    return f"{PREFIX}:inflight:{deployment_id}"


@_key(
    "sorted set",
    "until when each worker's in-flight count is trusted",
    writer="workers: `shared.routing_state`",
    reader="ingress: `shared.routing_state` (`least-busy`)",
    ttl="`worker_dead_after` (a lease)",
)
def inflight_leases(deployment_id: str) -> str:
    """Sorted set: worker name -> ms (Redis TIME) until which its count in :func:`inflight_counts` is
    trusted; a worker killed with -9 stops refreshing it and its jobs stop counting."""
    return f"{PREFIX}:inflight:{deployment_id}:leases"


@_key(
    "hash",
    "a deployment's decayed average time to first token",
    writer="workers: `shared.routing_state` (with a job's final frame)",
    reader="ingress: `shared.routing_state` (`latency`)",
    ttl="`routing_stats.latency_ttl`, from the last sample",
)
def ttft_stats(deployment_id: str) -> str:
    """Hash: decayed average time to first token of a deployment (``avg_ms``, ``samples``); expires when
    the deployment has been idle for ``RoutingStatsSettings.latency_ttl``."""
    return f"{PREFIX}:ttft:{deployment_id}"


# --- provider-wide caps (workers/provider_caps.py) ------------------------------------------------


@_key(
    "sorted set",
    "a provider's upstream calls in flight (`max_concurrency`)",
    writer="workers: `workers.provider_caps`",
    reader="workers: `workers.provider_caps`",
    ttl="`worker_dead_after` (leases renewed every heartbeat)",
)
def provider_slots(provider: str) -> str:
    """Sorted set: job id -> ms (Redis TIME) its upstream-call slot is leased until; at most
    ``ProviderSettings.max_concurrency`` live members, across every worker process of the pool."""
    return f"{PREFIX}:provider:{provider}:slots"


@_key(
    "sorted set",
    "a provider's upstream calls in the last minute (`requests_per_minute`)",
    writer="workers: `workers.provider_caps`",
    reader="workers: `workers.provider_caps`",
    ttl="60 s",
)
def provider_calls(provider: str) -> str:
    """Sorted set: job id -> ms (Redis TIME) it was admitted; the last minute's members are the calls
    counted against ``ProviderSettings.requests_per_minute``."""
    return f"{PREFIX}:provider:{provider}:calls"


# --- accounts, rate limits, credits, usage (ingress/control/accounts.py, shared/ratelimit, credits, usage) -
# An account id sits in braces in every per-account key, so no id (even one holding ":") can name another
# account's key, and Redis Cluster would keep all of one account's keys in one slot.


@_key(
    "hash",
    "one account: name, plan, status, dashboard token digest",
    writer="control plane: `ingress.control.accounts`",
    reader="ingress: `shared.ratelimit` (plan and status, every request); control plane",
)
def account(account_id: str) -> str:
    """Hash: one account's record (name, plan, status, dashboard token digest, created_at)."""
    return f"{PREFIX}:account:{{{account_id}}}"


ACCOUNTS_INDEX = f"{PREFIX}:accounts"
"""Sorted set: account id -> unix time of its creation, for listing in order."""
_describe(
    "ACCOUNTS_INDEX",
    "sorted set",
    "every account, in creation order",
    writer="control plane: `ingress.control.accounts`",
    reader="control plane: `ingress.control.accounts`",
)


@_key(
    "string",
    "the account a dashboard token signs in as, by digest",
    writer="control plane: `ingress.control.accounts` (create; rotate, `dashboard_token_rotate.lua`)",
    reader="control plane: `ingress.control.accounts` (Dashboard sign-in)",
)
def dashboard_token(digest: str) -> str:
    """String: the account id a dashboard token (by hex SHA-256 digest) signs in as."""
    return f"{PREFIX}:dashtoken:{digest}"


@_key(
    "set",
    "one account's key ids",
    writer="`ingress.api_keys` (create)",
    reader="`ingress.api_keys` (list, plan change)",
)
def account_api_keys(account_id: str) -> str:
    """Set: the ids of every API key of one account."""
    return f"{PREFIX}:account:{{{account_id}}}:keys"


@_key(
    "set",
    "one account's unrevoked key ids, for the live-key cap",
    writer="`ingress.api_keys` (create, `api_key_create.lua`; revoke)",
    reader="`ingress.api_keys` (create, `api_key_create.lua`)",
)
def account_live_api_keys(account_id: str) -> str:
    """Set: the ids of one account's API keys not revoked, counted (``SCARD``) by the live-key cap, so
    that a creation costs the same however many revoked keys the account keeps."""
    return f"{PREFIX}:account:{{{account_id}}}:livekeys"


@_key(
    "sorted set",
    "one account's API key creations of the last hour, for the creation-rate cap",
    writer="`ingress.api_keys` (create, `api_key_create.lua`)",
    reader="`ingress.api_keys` (create)",
    ttl="one hour after the last creation",
)
def key_creations(account_id: str) -> str:
    """Sorted set: one account's recent API key creations, key id -> ms of Redis TIME; trimmed to the
    last hour (``KEY_CREATION_WINDOW_MS``) on every creation and expiring with it."""
    return f"{PREFIX}:account:{{{account_id}}}:keycreations"


KEY_CREATION_WINDOW_MS = 3_600_000


@_key(
    "string",
    "one account's GCRA state for its `requests` or `tokens` limit",
    writer="ingress: `shared.ratelimit` (admission; refund when a request ends unanswered); "
    "workers: `shared.ratelimit` (refund of unused tokens, with the final frame)",
    reader="ingress: `shared.ratelimit`",
    ttl="until the limit is fully restored (at most a minute)",
)
def rate_limit(account_id: str, limit: str) -> str:
    """String: the GCRA theoretical arrival time (µs of Redis TIME) of one account's ``requests`` or
    ``tokens`` limit; expires when the limit is fully restored."""
    return f"{PREFIX}:ratelimit:{{{account_id}}}:{limit}"


@_key(
    "hash",
    "one account's credit in micro-USD: balance, reserved, spent",
    writer="ingress: `shared.credits` (reserve, release, sweep); workers: `shared.credits` (settle); "
    "control plane (add)",
    reader="ingress: `shared.credits` (reserve); control plane (balances)",
)
def credit_balance(account_id: str) -> str:
    """Hash: one account's credit in integer micro-USD: ``balance`` (owned), ``reserved`` (held by open
    reservations), ``spent`` (charged so far)."""
    return f"{PREFIX}:credit:{{{account_id}}}"


@_key(
    "stream",
    "every credit grant of one account",
    writer="control plane: `shared.credits` (add)",
    reader="control plane: `shared.credits` (ledger)",
    ttl="none; trimmed to about the last 10,000 entries (`credits.LEDGER_KEPT`)",
)
def credit_ledger(account_id: str) -> str:
    """Stream: the credit grants and adjustments of one account, the last ~10,000 kept."""
    return f"{PREFIX}:credit:{{{account_id}}}:ledger"


@_key(
    "hash",
    "one request's credit hold: account, amount, deadline, state; once settled, what it charged and "
    "whether its refund and usage record were written",
    writer="ingress: `shared.credits` (reserve, release, sweep); workers: `shared.credits` (settle)",
    reader="the same scripts",
    ttl="none while held; 5 minutes once settled or expired (`CREDIT_RESERVATION_TOMBSTONE_TTL`)",
)
def credit_reservation(reservation_id: str) -> str:
    """Hash: one reservation (account, amount, deadline, state held/settled/expired; once settled
    ``charged``, and the marks ``refunded`` and ``recorded`` that make a resent settlement write its
    token refund and usage record once)."""
    return f"{PREFIX}:reservation:{reservation_id}"


CREDIT_RESERVATIONS = f"{PREFIX}:credit:reservations"
"""Sorted set: reservation id -> its deadline (ms of Redis TIME); the sweep releases those past it."""
_describe(
    "CREDIT_RESERVATIONS",
    "sorted set",
    "open holds by deadline",
    writer="ingress: `shared.credits` (reserve adds; release, sweep remove); workers: `shared.credits` "
    "(settle removes)",
    reader="ingress: `ingress.admission` (the reservation sweep)",
)

CREDIT_RESERVATION_TOMBSTONE_TTL = 300
"""Seconds a settled or expired reservation's record stays, so a repeated or late settle is recognised
(past it, a settle finds no record: outcome ``unknown``, nothing charged)."""


@_key(
    "stream",
    "one account's recent usage records",
    writer="workers: `workers.settlement` (with the final frame)",
    reader="control plane: admin API",
    ttl="none (trimmed to the last 10,000)",
)
def usage_records(account_id: str) -> str:
    """Stream: one account's recent per-request usage records (trimmed to ``USAGE_RECORDS_MAXLEN``)."""
    return f"{PREFIX}:usage:{{{account_id}}}"


USAGE_ALL_RECORDS = f"{PREFIX}:usage"
"""Stream: every account's recent usage records, for operators (trimmed to ``USAGE_ALL_RECORDS_MAXLEN``)."""
_describe(
    "USAGE_ALL_RECORDS",
    "stream",
    "every account's recent usage records",
    writer="workers: `workers.settlement` (with the final frame)",
    reader="control plane: admin API",
    ttl="none (trimmed to the last 100,000)",
)

USAGE_RECORDS_MAXLEN = 10_000
USAGE_ALL_RECORDS_MAXLEN = 100_000


@_key(
    "hash",
    "one account's per-model totals on one UTC day",
    writer="workers: `workers.settlement` (with the final frame)",
    reader="control plane: admin API, Dashboard, `aiorouter usage`",
    ttl="400 days (`USAGE_DAILY_TTL`)",
)
def usage_daily(account_id: str, day: str) -> str:
    """Hash: one account's usage on one UTC day (``YYYY-MM-DD``), fields ``<model>|<counter>``."""
    return f"{PREFIX}:usage:{{{account_id}}}:day:{day}"


USAGE_DAILY_TTL = 400 * 86_400

# --- files and batches (ingress/batches/) ----------------------------------------------------------
# A file's or batch's record is keyed by its id alone; the account it belongs to is a field of the record,
# checked on every read.  Per-batch keys put the batch id in braces: a batch's keys share one cluster slot.


@_key(
    "list",
    "the name of a pool's batch lane, its second rq queue (the list is `rq:queue:<pool>:batch`, with rq's "
    "intermediate queue and registries under that name)",
    writer="batch driver: `ingress.batches.dispatch` (enqueue), `ingress.batches.wind_down` (LREM)",
    reader="workers: `workers.batch_lane` (`batch_lane_take.lua`); admin API; `ingress.batches.lost_lines`",
)
def batch_lane(pool: str) -> str:
    """The name of a pool's second, lower-priority rq queue: batch lines wait there (its rq list is
    :func:`rq_queue_key` of this name)."""
    return f"{pool}:batch"


@_key(
    "hash",
    "one uploaded or output file's record (account, filename, purpose, bytes, times, storage key)",
    writer="ingress: `ingress.batches.files` (upload); batch driver: `ingress.batches.files` (output files, "
    "expiry sweep)",
    reader="ingress: `ingress.batches.files`; batch driver",
    ttl="none; deleted by the driver's sweep at its `expires_at` (`batches.file_ttl` after its creation, or "
    "sooner as the client's `expires_after` / `output_expires_after` asked)",
)
def file_record(file_id: str) -> str:
    """Hash: one file's record (account, filename, purpose, bytes, times, storage key)."""
    return f"{PREFIX}:file:{file_id}"


@_key(
    "set",
    "the unfinished batches reading this file as their input: while it has members, deleting or expiring "
    "the file drops its record but keeps its content, which the last of them deletes as it ends",
    writer="ingress: `ingress.batches.records` (create); batch driver: `ingress.batches.finalize` (clean-up)",
    reader="ingress, batch driver: `ingress.batches.files` (delete), `ingress.batches.finalize`",
    ttl="`FILE_BATCHES_TTL`, renewed as each batch is created; a batch ends within its completion window",
)
def file_batches(file_id: str) -> str:
    """Set: the unfinished batches whose input is this file (its content outlives a delete for them)."""
    return f"{PREFIX}:file:{file_id}:batches"


FILE_BATCHES_TTL = 30 * 86_400
"""Seconds a file's set of unfinished batches outlives the creation of the last of them (a batch ends
within its completion window; the margin covers a driver that was down)."""


@_key(
    "sorted set",
    "file id -> µs of its creation: one account's files, for listing",
    writer="ingress, batch driver: `ingress.batches.files`",
    reader="ingress: `ingress.batches.files_api`",
)
def account_files(account_id: str) -> str:
    """Sorted set: file id -> µs of its creation, one account's files for listing."""
    return f"{PREFIX}:account:{{{account_id}}}:files"


FILES_DELETING = f"{PREFIX}:files:deleting"
"""Sorted set: file id -> unix seconds its content's deletion was decided (a delete, an expiry, the end of
the last batch reading it), until the content is deleted; the driver's sweep finishes what a process
killed in between left."""
_describe(
    "FILES_DELETING",
    "sorted set",
    "file id -> unix seconds its record was dropped, until its content is deleted (or kept for a batch)",
    writer="ingress, batch driver: `ingress.batches.files` (delete, expiry, a batch's end)",
    reader="batch driver: `ingress.batches.files` (the sweep, after `FILES_DELETING_GRACE`)",
)
FILES_DELETING_GRACE = 60
"""Seconds an entry of :data:`FILES_DELETING` waits before the sweep finishes its deletion."""


FILES_EXPIRY = f"{PREFIX}:files:expiry"
"""Sorted set: file id -> unix seconds it expires at; the batch driver deletes the files past it."""
_describe(
    "FILES_EXPIRY",
    "sorted set",
    "file id -> unix seconds it expires at",
    writer="ingress, batch driver: `ingress.batches.files`",
    reader="batch driver: `ingress.batches.files` (the expiry sweep)",
)


@_key(
    "hash",
    "one batch's record: the Batch object's fields, its counts and usage, and the driver's cursor",
    writer="ingress: `ingress.batches.records` (create, cancel); batch driver: `ingress.batches` "
    "(`batch_transition.lua`, dispatch, finalize); workers: `workers.batch_results` (`batch_result.lua`: "
    "an answer's tokens, with its result)",
    reader="ingress: `ingress.batches.batches_api`, Dashboard; batch driver",
    ttl="none while the batch runs; `BATCH_RECORD_TTL` (400 days) once it ends",
)
def batch_record(batch_id: str) -> str:
    """Hash: one batch's record (the Batch object's fields, its counts and usage, the driver's cursor)."""
    return f"{PREFIX}:batch:{{{batch_id}}}"


@_key(
    "sorted set",
    "batch id -> µs of its creation: one account's batches, for listing",
    writer="ingress: `ingress.batches.records`",
    reader="ingress: `ingress.batches.batches_api`, `ingress.batches.dashboard_api`",
    ttl="none; a batch creation drops its entries older than `ACCOUNT_BATCHES_KEPT` (records gone)",
)
def account_batches(account_id: str) -> str:
    """Sorted set: batch id -> µs of its creation, one account's batches for listing."""
    return f"{PREFIX}:account:{{{account_id}}}:batches"


BATCHES_ACTIVE = f"{PREFIX}:batches:active"
"""Sorted set: batch id -> µs of its creation, every batch the driver has still work on."""
_describe(
    "BATCHES_ACTIVE",
    "sorted set",
    "batch id -> µs of its creation: every batch the driver still has work on",
    writer="ingress: `ingress.batches.records` (create); batch driver: `ingress.batches.finalize` (ZREM)",
    reader="batch driver: `ingress.batches.driver`",
)


@_key(
    "hash",
    "line number -> the attempt (job id, pool, attempt, credit hold) of each of a batch's lines in a lane",
    writer="batch driver: `ingress.batches.dispatch`, `ingress.batches.batch_run`",
    reader="batch driver: `ingress.batches.batch_run`, `ingress.batches.lost_lines`",
    ttl="none; deleted when the batch ends",
)
def batch_inflight(batch_id: str) -> str:
    """Hash: line number -> the attempt (job id, pool, attempt, reservation) of each line in its lane."""
    return f"{PREFIX}:batch:{{{batch_id}}}:inflight"


@_key(
    "hash",
    "line number -> its result line (`O`/`E` then JSON), until the driver writes it to storage",
    writer="workers: `workers.batch_results` (`batch_result.lua`, with the final frame); batch driver "
    "(lines that failed without a job)",
    reader="batch driver: `ingress.batches.driver`, `ingress.batches.batch_run`",
    ttl="none; deleted when the batch ends",
)
def batch_results(batch_id: str) -> str:
    """Hash: line number -> its result line (``O``/``E`` then JSON), until the driver writes it to storage."""
    return f"{PREFIX}:batch:{{{batch_id}}}:results"


@_key(
    "string",
    "bitmap: bit N set once line N's result was written to storage (a late duplicate is dropped)",
    writer="batch driver: `ingress.batches.batch_run`",
    reader="workers, batch driver: `batch_result.lua`",
    ttl="none; deleted when the batch ends",
)
def batch_done(batch_id: str) -> str:
    """Bitmap: bit N set once line N's result was written to storage; a late duplicate result is dropped."""
    return f"{PREFIX}:batch:{{{batch_id}}}:done"


@_key(
    "string",
    "lines of one account's unfinished batches, held against its plan's `batch_queued_lines`",
    writer="batch driver: `ingress.batches.validate_batch` (`batch_admit_lines.lua`), "
    "`ingress.batches.finalize` (`batch_release_lines.lua`)",
    reader="the same scripts",
)
def batch_queued_lines(account_id: str) -> str:
    """String: lines of one account's unfinished batches, held against its plan's ``batch_queued_lines``."""
    return f"{PREFIX}:account:{{{account_id}}}:batch_lines"


BATCH_DRIVER_LEASE = f"{PREFIX}:batches:driver"
"""String: the name of the batch driver process that drives every batch, for ``driver_lease`` seconds."""
_describe(
    "BATCH_DRIVER_LEASE",
    "string",
    "the name of the one batch driver process that drives every batch",
    writer="batch driver: `ingress.batches.driver` (`batch_driver_lease.lua`)",
    reader="batch driver",
    ttl="`batches.driver_lease`, renewed every round",
)

BATCH_RECORD_TTL = 400 * 86_400
"""Seconds a finished batch's record stays (its per-line keys are deleted when it finishes)."""
ACCOUNT_BATCHES_KEPT = BATCH_RECORD_TTL + 30 * 86_400
"""Seconds an account's batch index keeps an entry: its record's life after the batch ended, and more
than a batch runs (its 24-hour window, and the wind-down after it)."""

BATCH_REPLY_CHANNEL = f"{PREFIX}:reply:batches"
"""The reply channel of batch lines' jobs: nobody listens (results go to :func:`batch_results`), so their
frames cost a PUBLISH per worker round trip (bundled) and are dropped."""
_describe(
    "BATCH_REPLY_CHANNEL",
    "channel",
    "the reply channel of every batch line's job: nobody subscribes (results go to `batch_results`)",
    writer="workers: `workers.publisher`",
    reader="nobody",
    ttl="-",
)
