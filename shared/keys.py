"""Every Redis key, channel name and TTL that AIOrouter uses, in one place.

rq owns its own keys (``rq:queue:*``, ``rq:job:*``, registries, workers); the helpers here that name
them ask rq, so that ``rq info`` and rq-dashboard see exactly what we write.  Nobody else formats a
Redis key.
"""

from __future__ import annotations

from rq.queue import Queue
from rq.registry import StartedJobRegistry

PREFIX = "aior"

# --- rq's keys -----------------------------------------------------------------------------------


def rq_queue_key(pool: str) -> str:
    """The rq list a pool's jobs wait in."""
    return f"{Queue.redis_queue_namespace_prefix}{pool}"


RQ_QUEUES_SET = Queue.redis_queues_keys


def rq_started_registry_key(queue: str) -> str:
    """The sorted set of a queue's jobs a worker is running now (rq's started registry)."""
    return StartedJobRegistry.key_template.format(queue)


# --- request/response traffic ---------------------------------------------------------------------


def reply_channel(ingress_id: str) -> str:
    """The one pub/sub channel an ingress process listens on; workers publish every event of its
    requests there (the request id is inside each frame)."""
    return f"{PREFIX}:reply:{ingress_id}"


CANCEL_CHANNEL = f"{PREFIX}:cancel"
"""Broadcast channel: ingress publishes a job id there when the client went away; the worker that
runs it stops the upstream call."""


def cancelled_marker(job_id: str) -> str:
    """Set when a job is cancelled, so a worker that dequeues it afterwards drops it at once."""
    return f"{PREFIX}:cancelled:{job_id}"


CANCELLED_MARKER_TTL = 600

# --- worker liveness ------------------------------------------------------------------------------


def worker_alive(worker_name: str) -> str:
    """A key each worker process refreshes every heartbeat; its expiry means the worker is dead."""
    return f"{PREFIX}:alive:{worker_name}"


def pool_workers(pool: str) -> str:
    """Sorted set: worker name -> unix time of its last heartbeat, per pool."""
    return f"{PREFIX}:pool:{pool}:workers"


POOLS_SET = f"{PREFIX}:pools"
"""Set of every pool name that has had a worker, for readiness and operator views."""

# --- API keys -------------------------------------------------------------------------------------


def api_key(digest: str) -> str:
    """Hash: the record of one API key, by the hex SHA-256 digest of its secret."""
    return f"{PREFIX}:apikey:{digest}"


API_KEYS_INDEX = f"{PREFIX}:apikeys"
"""Hash: key id -> digest, for listing and revoking by id."""

# --- circuit breaker (shared/breaker.py) ----------------------------------------------------------


def breaker_state(deployment_id: str) -> str:
    """Hash: one deployment's breaker (``open_until``/``probe_until`` in ms of Redis TIME, ``trips``)."""
    return f"{PREFIX}:breaker:{deployment_id}"


def breaker_failures(deployment_id: str) -> str:
    """Sorted set: one deployment's recent failures (member = sequence number, score = ms of Redis TIME)."""
    return f"{PREFIX}:breaker:{deployment_id}:failures"


BREAKER_BLOCKED = f"{PREFIX}:breakers:blocked"
"""Sorted set: deployment id -> ms (Redis TIME) until which routing must skip it (cooling down, or its one
half-open probe is in flight).  The one key the ingress' cheap bulk read looks at."""

BREAKER_DEPLOYMENTS = f"{PREFIX}:breakers"
"""Set of every deployment id that ever recorded a failure, for the operator view."""

# --- routing statistics (shared/routing_state.py) -------------------------------------------------


def inflight_counts(deployment_id: str) -> str:
    """Hash: worker name -> jobs that worker runs on the deployment right now."""
    return f"{PREFIX}:inflight:{deployment_id}"


def inflight_leases(deployment_id: str) -> str:
    """Sorted set: worker name -> ms (Redis TIME) until which its count in :func:`inflight_counts` is
    trusted; a worker killed with -9 stops refreshing it and its jobs stop counting."""
    return f"{PREFIX}:inflight:{deployment_id}:leases"


def ttft_stats(deployment_id: str) -> str:
    """Hash: decayed average time to first token of a deployment (``avg_ms``, ``samples``); expires when
    the deployment has been idle for ``RoutingStatsSettings.latency_ttl``."""
    return f"{PREFIX}:ttft:{deployment_id}"


# --- provider-wide caps (workers/provider_caps.py) ------------------------------------------------


def provider_slots(provider: str) -> str:
    """Sorted set: job id -> ms (Redis TIME) its upstream-call slot is leased until; at most
    ``ProviderSettings.max_concurrency`` live members, across every worker process of the pool."""
    return f"{PREFIX}:provider:{provider}:slots"


def provider_calls(provider: str) -> str:
    """Sorted set: job id -> ms (Redis TIME) it was admitted; the last minute's members are the calls
    counted against ``ProviderSettings.requests_per_minute``."""
    return f"{PREFIX}:provider:{provider}:calls"


# --- accounts, rate limits, credits, usage (ingress/control/accounts.py, shared/ratelimit, credits, usage) -
# An account id sits in braces in every per-account key, so no id (even one holding ":") can name another
# account's key, and Redis Cluster would keep all of one account's keys in one slot.


def account(account_id: str) -> str:
    """Hash: one account's record (name, plan, status, dashboard token digest, created_at)."""
    return f"{PREFIX}:account:{{{account_id}}}"


ACCOUNTS_INDEX = f"{PREFIX}:accounts"
"""Sorted set: account id -> unix time of its creation, for listing in order."""


def dashboard_token(digest: str) -> str:
    """String: the account id a dashboard token (by hex SHA-256 digest) signs in as."""
    return f"{PREFIX}:dashtoken:{digest}"


def account_api_keys(account_id: str) -> str:
    """Set: the ids of every API key of one account."""
    return f"{PREFIX}:account:{{{account_id}}}:keys"


def rate_limit(account_id: str, limit: str) -> str:
    """String: the GCRA theoretical arrival time (µs of Redis TIME) of one account's ``requests`` or
    ``tokens`` limit; expires when the limit is fully restored."""
    return f"{PREFIX}:ratelimit:{{{account_id}}}:{limit}"


def credit_balance(account_id: str) -> str:
    """Hash: one account's credit in integer micro-USD: ``balance`` (owned), ``reserved`` (held by open
    reservations), ``spent`` (charged so far)."""
    return f"{PREFIX}:credit:{{{account_id}}}"


def credit_ledger(account_id: str) -> str:
    """Stream: every credit grant or adjustment of one account (never trimmed)."""
    return f"{PREFIX}:credit:{{{account_id}}}:ledger"


def credit_reservation(reservation_id: str) -> str:
    """Hash: one reservation (account, amount, deadline, state held/settled/expired)."""
    return f"{PREFIX}:reservation:{reservation_id}"


CREDIT_RESERVATIONS = f"{PREFIX}:credit:reservations"
"""Sorted set: reservation id -> its deadline (ms of Redis TIME); the sweep releases those past it."""

CREDIT_RESERVATION_TOMBSTONE_TTL = 86_400
"""Seconds a settled or expired reservation's record stays, so a repeated or late settle is recognised."""


def usage_records(account_id: str) -> str:
    """Stream: one account's recent per-request usage records (trimmed to ``USAGE_RECORDS_MAXLEN``)."""
    return f"{PREFIX}:usage:{{{account_id}}}"


USAGE_ALL_RECORDS = f"{PREFIX}:usage"
"""Stream: every account's recent usage records, for operators (trimmed to ``USAGE_ALL_RECORDS_MAXLEN``)."""

USAGE_RECORDS_MAXLEN = 10_000
USAGE_ALL_RECORDS_MAXLEN = 100_000


def usage_daily(account_id: str, day: str) -> str:
    """Hash: one account's usage on one UTC day (``YYYY-MM-DD``), fields ``<model>|<counter>``."""
    return f"{PREFIX}:usage:{{{account_id}}}:day:{day}"


USAGE_DAILY_TTL = 400 * 86_400

# --- files and batches (ingress/batches/) ----------------------------------------------------------
# A file's or batch's record is keyed by its id alone; the account it belongs to is a field of the record,
# checked on every read.  Per-batch keys put the batch id in braces: a batch's keys share one cluster slot.


def batch_lane(pool: str) -> str:
    """The name of a pool's second, lower-priority rq queue: batch lines wait there (its rq list is
    :func:`rq_queue_key` of this name)."""
    return f"{pool}:batch"


def file_record(file_id: str) -> str:
    """Hash: one file's record (account, filename, purpose, bytes, times, storage key)."""
    return f"{PREFIX}:file:{file_id}"


def account_files(account_id: str) -> str:
    """Sorted set: file id -> µs of its creation, one account's files for listing."""
    return f"{PREFIX}:account:{{{account_id}}}:files"


FILES_EXPIRY = f"{PREFIX}:files:expiry"
"""Sorted set: file id -> unix seconds it expires at; the batch driver deletes the files past it."""


def batch_record(batch_id: str) -> str:
    """Hash: one batch's record (the Batch object's fields, its counts, and the driver's cursor)."""
    return f"{PREFIX}:batch:{{{batch_id}}}"


def account_batches(account_id: str) -> str:
    """Sorted set: batch id -> µs of its creation, one account's batches for listing."""
    return f"{PREFIX}:account:{{{account_id}}}:batches"


BATCHES_ACTIVE = f"{PREFIX}:batches:active"
"""Sorted set: batch id -> µs of its creation, every batch the driver has still work on."""


def batch_inflight(batch_id: str) -> str:
    """Hash: line number -> the attempt (job id, pool, attempt, reservation) of each line in its lane."""
    return f"{PREFIX}:batch:{{{batch_id}}}:inflight"


def batch_results(batch_id: str) -> str:
    """Hash: line number -> its result line (``O``/``E`` then JSON), until the driver writes it to storage."""
    return f"{PREFIX}:batch:{{{batch_id}}}:results"


def batch_done(batch_id: str) -> str:
    """Bitmap: bit N set once line N's result was written to storage; a late duplicate result is dropped."""
    return f"{PREFIX}:batch:{{{batch_id}}}:done"


def batch_queued_lines(account_id: str) -> str:
    """String: lines of one account's unfinished batches, held against its plan's ``batch_queued_lines``."""
    return f"{PREFIX}:account:{{{account_id}}}:batch_lines"


BATCH_DRIVER_LEASE = f"{PREFIX}:batches:driver"
"""String: the name of the batch driver process that drives every batch, for ``driver_lease`` seconds."""

BATCH_RECORD_TTL = 400 * 86_400
"""Seconds a finished batch's record stays (its per-line keys are deleted when it finishes)."""

BATCH_REPLY_CHANNEL = f"{PREFIX}:reply:batches"
"""The reply channel of batch lines' jobs: nobody listens (results go to :func:`batch_results`), so their
frames cost one PUBLISH each and are dropped."""
