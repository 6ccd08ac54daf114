"""A worker stand-in for ingress tests, with the real worker's Redis contract and nothing else.

It takes job ids off the pool's rq queue (``BLMOVE`` into rq's intermediate list, as rq does), loads the
job with rq's ``Job.fetch`` and the orjson serializer, and publishes frames encoded with
:func:`shared.events.encode` on the job's ``reply_to`` channel.  Each test scripts what it publishes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis
import redis.asyncio as aredis
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job

from shared import events, keys
from shared.errors import AIORouterError
from shared.jobs import CompletionJob
from shared.serialization import OrjsonSerializer


@dataclass(slots=True)
class TakenJob:
    job: CompletionJob
    seq: int = 0

    @property
    def id(self) -> str:
        return self.job.request_id


class FakeWorker:
    def __init__(
        self,
        aredis_client: aredis.Redis,
        sync_client: redis.Redis,
        *,
        pool: str = "simulated",
        name: str = "fake-1",
    ) -> None:
        self.redis = aredis_client
        self.sync = sync_client
        self.pool = pool
        self.name = name

    async def heartbeat(self, ttl: float = 5.0) -> None:
        """Refresh this worker's liveness key and its pool heartbeat, as a real worker does each beat."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.worker_alive(self.name), b"1", px=int(ttl * 1000))
            pipe.zadd(keys.pool_workers(self.pool), {self.name: time.time()})
            pipe.sadd(keys.POOLS_SET, self.pool)
            await pipe.execute()

    async def die(self) -> None:
        await self.redis.delete(keys.worker_alive(self.name))

    async def take(self, wait_seconds: int = 5) -> TakenJob:
        queue_key = keys.rq_queue_key(self.pool)
        job_id = await self.redis.blmove(
            queue_key, IntermediateQueue.get_intermediate_queue_key(queue_key), wait_seconds, "LEFT", "RIGHT"
        )
        assert job_id is not None, "no job was enqueued"
        rq_job = await asyncio.to_thread(
            Job.fetch,
            job_id.decode() if isinstance(job_id, bytes) else job_id,
            connection=self.sync,
            serializer=OrjsonSerializer,
        )
        return TakenJob(CompletionJob.from_wire(rq_job.args[0]))

    async def publish(
        self, taken: TakenJob, kind: bytes, meta: dict[str, Any] | None = None, payload: bytes = b""
    ) -> None:
        frame = events.encode(kind, taken.id, taken.seq, meta, payload)
        taken.seq += 1
        await self.redis.publish(taken.job.reply_to, frame)

    async def start(
        self,
        taken: TakenJob,
        provider: str = "simulated",
        prep_ms: float | None = None,
        held_ms: float | None = None,
    ) -> None:
        meta: dict[str, Any] = {
            "provider": provider,
            "worker": self.name,
            "upstream_model": taken.job.upstream_model,
        }
        if prep_ms is not None:
            meta["prep_ms"] = prep_ms
        if held_ms is not None:
            meta["held_ms"] = held_ms
        await self.publish(taken, events.START, meta)

    async def chunk(self, taken: TakenJob, text: str) -> None:
        await self.publish(taken, events.CHUNKS, payload=events.sse_data(chunk_object(taken.job, text)))

    async def done(self, taken: TakenJob, text: str = "", timing: dict[str, float] | None = None) -> None:
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        if taken.job.stream:
            payload = events.sse_data(chunk_object(taken.job, "", finish_reason="stop")) + events.SSE_DONE
        else:
            payload = orjson.dumps(completion_object(taken.job, text, usage))
        meta: dict[str, Any] = {"usage": usage, "finish_reason": "stop"}
        if timing is not None:
            meta["timing"] = timing
        await self.publish(taken, events.DONE, meta, payload)

    async def error(self, taken: TakenJob, error: AIORouterError) -> None:
        await self.publish(taken, events.ERROR, error.to_event())


def chunk_object(job: CompletionJob, text: str, finish_reason: str | None = None) -> dict[str, Any]:
    delta = {"content": text} if text else {}
    return {
        "id": f"chatcmpl-{job.request_id}",
        "object": "chat.completion.chunk",
        "created": job.created,
        "model": job.model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def completion_object(job: CompletionJob, text: str, usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{job.request_id}",
        "object": "chat.completion",
        "created": job.created,
        "model": job.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": usage,
    }
