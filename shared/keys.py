"""Every Redis key, channel name and TTL that AIOrouter uses, in one place.

rq owns its own keys (``rq:queue:*``, ``rq:job:*``, registries, workers); the helpers here that name
them ask rq, so that ``rq info`` and rq-dashboard see exactly what we write.  Nobody else formats a
Redis key.
"""

from __future__ import annotations

from rq.queue import Queue

PREFIX = "aior"

# --- rq's keys -----------------------------------------------------------------------------------


def rq_queue_key(pool: str) -> str:
    """The rq list a pool's jobs wait in."""
    return f"{Queue.redis_queue_namespace_prefix}{pool}"


RQ_QUEUES_SET = Queue.redis_queues_keys

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
