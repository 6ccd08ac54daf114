"""The completion job: what the ingress enqueues on rq and a worker executes.

One rq job per client request, on the queue of the provider pool that routing chose.  The rq job id is
the request id; its single argument is :meth:`CompletionJob.to_wire`.  :func:`enqueue_commands` builds the
job with rq's own code (see :mod:`shared.rq_bridge`) so that it is a genuine rq job.

The whole request body is in the job's record only while the job waits in its queue: once a worker has
loaded it, the record's call is replaced by :func:`diagnostic_call` (the job without its body, plus the
body's size, message count and first bytes of its prompt), so what rq keeps in its finished and failed
registries, or moves there from a dead worker, stays small.

The job's hash carries one field of ours besides rq's, :data:`REPLY_CHANNEL_FIELD`: the job's reply
channel, so that the script behind a worker's move (``shared/lua/job_take_read.lua``) asks ``PUBSUB
NUMSUB`` of it and a job whose ingress is gone is dropped before it calls the upstream.  rq reads only the
fields it knows (``Job.fetch``, ``rq info`` and rq-dashboard see the job as before).  A batch line's job
has no such field: nobody subscribes to its channel (:data:`~shared.keys.BATCH_REPLY_CHANNEL`), by design.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields
from typing import Any

from rq.job import Job
from rq.queue import Queue
from rq.utils import now, utcformat

from shared.keys import BATCH_REPLY_CHANNEL, RQ_QUEUES_SET
from shared.redis_commands import Command
from shared.rq_bridge import RECORDING_CLIENT, recorded, recording_pipeline
from shared.serialization import OrjsonSerializer, stored_call

JOB_FUNC = "workers.completion.run_completion"
"""What rq shows as the job's function; the AIOrouter worker executes it on its event loop."""

REPLY_CHANNEL_FIELD = "aior_reply_to"
"""The field of a job's rq hash that names its reply channel (ours; rq ignores it)."""

_ASSUMED_REDIS_VERSION = (7, 0, 0)  # spares rq an INFO round trip per job; we need Redis >= 6.2


@dataclass(frozen=True, slots=True)
class CompletionJob:
    request_id: str
    reply_to: str  # pub/sub channel of the ingress process waiting for the events
    model: str  # public model id, echoed in responses
    provider: str  # provider (= pool) chosen by routing
    upstream_model: str
    stream: bool
    include_usage: bool
    body: dict[str, Any]  # the validated client body; adapters translate it for their upstream
    created: int  # unix seconds, the `created` of every response object
    account_id: str = ""
    key_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        """The fields as a dict (shallow: ``body`` and ``extra`` are shared, not copied)."""
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> CompletionJob:
        return cls(**data)


def diagnostic_call(job: CompletionJob, *, body_bytes: int, prompt_bytes: int) -> bytes:
    """The serialized rq call a loaded job's record keeps instead of its request: the job's fields, and in
    place of the body its size in bytes (of the serialized call), its message count and the first
    ``prompt_bytes`` bytes (UTF-8) of its messages' text."""
    messages = job.body.get("messages")
    brief = {
        **job.to_wire(),
        "body": {
            "stripped": True,
            "bytes": body_bytes,
            "messages": len(messages) if isinstance(messages, list) else 0,
            "prompt_head": prompt_head(messages, prompt_bytes),
        },
    }
    return OrjsonSerializer.dumps((JOB_FUNC, None, (brief,), {}))


def unreadable_call(body_bytes: int) -> bytes:
    """What a loaded job's record keeps when its argument is no completion job: only its size."""
    return OrjsonSerializer.dumps((JOB_FUNC, None, ({"unreadable": True, "bytes": body_bytes},), {}))


def prompt_head(messages: Any, limit: int) -> str:
    """The first ``limit`` bytes (UTF-8, never a split character) of the text of ``messages``, in order."""
    if limit <= 0 or not isinstance(messages, list):
        return ""
    parts: list[str] = []
    size = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        texts = [content] if isinstance(content, str) else _part_texts(content)
        for text in texts:
            part = text[: limit - size]  # characters: at least as many bytes, so enough text is taken
            parts.append(part)
            size += len(part) + 1
            if size >= limit:
                break
        if size >= limit:
            break
    return "\n".join(parts).encode()[:limit].decode(errors="ignore")


def _part_texts(content: Any) -> list[str]:
    if not isinstance(content, list):
        return []
    return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]


def enqueue_commands(
    job: CompletionJob, *, job_timeout: int, result_ttl: int, failure_ttl: int, queue: str | None = None
) -> list[Command]:
    """The Redis commands that put ``job`` on its pool's rq queue (or on ``queue``, e.g. the pool's batch
    lane), as ``Queue.enqueue`` would.

    rq's own code builds the job hash once per pool and settings (:func:`_rq_template`), so the fields
    that never change between requests are not rebuilt on the hot path; each request fills in only its
    id, times, description and compressed call.  The hash is written once: rq's separate ``HSET status``
    before it is dropped, the hash carries the status.  After rq's fields comes the job's reply channel
    (:data:`REPLY_CHANNEL_FIELD`), unless it is the batch lines' one.
    """
    template = _rq_template(queue or job.provider, job_timeout, result_ttl, failure_ttl)
    stamp = utcformat(now())
    call = OrjsonSerializer.dumps((JOB_FUNC, None, (job.to_wire(),), {}))
    fields_ = {
        **template.fields,
        "created_at": stamp,
        "data": stored_call(call),
        "description": _description(job),
        "enqueued_at": stamp,
    }
    if job.reply_to != BATCH_REPLY_CHANNEL:
        fields_[REPLY_CHANNEL_FIELD] = job.reply_to
    key = Job.key_for(job.request_id)
    mapping = [item for pair in fields_.items() for item in pair]
    return [
        (("HSET", key, *mapping), {}),
        *template.after_save(key),
        (("SADD", RQ_QUEUES_SET, template.queue_key), {}),
        (("RPUSH", template.queue_key, job.request_id), {}),
    ]


def rq_enqueue_commands(
    job: CompletionJob, *, job_timeout: int, result_ttl: int, failure_ttl: int
) -> list[Command]:
    """The same commands from rq's ``Job.create`` and ``Queue`` code for every request (the reference
    :func:`enqueue_commands` is tested against)."""
    queue = Queue(job.provider, connection=RECORDING_CLIENT, serializer=OrjsonSerializer)
    queue.redis_server_version = _ASSUMED_REDIS_VERSION
    rq_job = Job.create(
        JOB_FUNC,
        args=(job.to_wire(),),
        id=job.request_id,
        connection=RECORDING_CLIENT,
        serializer=OrjsonSerializer,
        timeout=job_timeout,
        result_ttl=result_ttl,
        failure_ttl=failure_ttl,
        description=_description(job),
    )
    pipe = recording_pipeline()
    queue._prepare_for_queue(rq_job)
    queue._persist_job(rq_job, pipe)
    pipe.sadd(RQ_QUEUES_SET, queue.key)
    queue.push_job_id(rq_job.id, pipe)
    return recorded(pipe)


def _description(job: CompletionJob) -> str:
    return f"{job.model} via {job.provider} ({'stream' if job.stream else 'json'})"


_FIELDS = tuple(f.name for f in fields(CompletionJob))
_TEMPLATE_ID = "template"


@dataclass(frozen=True, slots=True)
class _Template:
    """rq's enqueue commands for one pool and settings, taken apart to be filled per request."""

    fields: dict[str, Any]  # the job hash, in rq's order
    after: tuple[Command, ...]  # what rq sends after the hash (TTLs), for the template's key
    queue_key: str

    def after_save(self, key: str) -> list[Command]:
        template_key = Job.key_for(_TEMPLATE_ID)
        return [
            (tuple(key if arg == template_key else arg for arg in args), options)
            for args, options in self.after
        ]


@functools.lru_cache(maxsize=256)
def _rq_template(provider: str, job_timeout: int, result_ttl: int, failure_ttl: int) -> _Template:
    sample = CompletionJob(_TEMPLATE_ID, "", "", provider, "", False, False, {}, 0)
    commands = rq_enqueue_commands(
        sample, job_timeout=job_timeout, result_ttl=result_ttl, failure_ttl=failure_ttl
    )
    hash_index = max(i for i, (args, _) in enumerate(commands) if str(args[0]).upper() == "HSET")
    args = commands[hash_index][0]
    pairs = dict(zip(args[2::2], args[3::2], strict=True))
    after = tuple(
        command
        for command in commands[hash_index + 1 :]
        if str(command[0][0]).upper() not in ("SADD", "RPUSH")
    )
    return _Template(pairs, after, Queue(provider, connection=RECORDING_CLIENT).key)
