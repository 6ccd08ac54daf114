"""The completion job: what the ingress enqueues on rq and a worker executes.

One rq job per client request, on the queue of the provider pool that routing chose.  The rq job id is
the request id; its single argument is :meth:`CompletionJob.to_wire`.  :func:`enqueue_commands` builds the
job with rq's own code (see :mod:`shared.rq_bridge`) so that it is a genuine rq job.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rq.job import Job
from rq.queue import Queue

from shared.keys import RQ_QUEUES_SET
from shared.rq_bridge import RECORDING_CLIENT, Command, recorded, recording_pipeline
from shared.serialization import OrjsonSerializer

JOB_FUNC = "workers.completion.run_completion"
"""What rq shows as the job's function; the AIOrouter worker executes it on its event loop."""

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
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> CompletionJob:
        return cls(**data)


def enqueue_commands(
    job: CompletionJob, *, job_timeout: int, result_ttl: int, failure_ttl: int
) -> list[Command]:
    """The Redis commands that put ``job`` on its pool's rq queue, exactly as ``Queue.enqueue`` would."""
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
        description=f"{job.model} via {job.provider} ({'stream' if job.stream else 'json'})",
    )
    pipe = recording_pipeline()
    queue._prepare_for_queue(rq_job)
    queue._persist_job(rq_job, pipe)
    pipe.sadd(RQ_QUEUES_SET, queue.key)
    queue.push_job_id(rq_job.id, pipe)
    return recorded(pipe)
