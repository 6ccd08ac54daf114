"""Requests to stop a job, or the whole worker, as they reach a worker process, and where each goes.

Two sources share one pub/sub connection: the ingress' cancel broadcast (:data:`shared.keys.CANCEL_CHANNEL`,
payload = the job id, sent when the client went away) and rq's own worker channel (``rq:pubsub:<name>``,
JSON commands: ``stop-job``/``stop-execution`` with a ``job_id``, and ``shutdown``), so that
``rq.command.send_stop_job_command`` and ``send_shutdown_command`` work on an AsyncWorker too.  SIGTERM
and SIGINT ask the worker to stop as well (:func:`handle_signals`).

:class:`StopRequestHandler` answers them: a job's request cancels it where it runs, and is remembered
where it does not run (yet); a worker's stops the worker.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

import orjson
import redis.asyncio as aredis
from redis.exceptions import RedisError
from rq.worker.base import BaseWorker

from shared import keys
from shared.redis_commands import run_commands

log = logging.getLogger(__name__)

EARLY_CANCELS_KEPT = 256  # cancels of jobs not running here remembered, the oldest forgotten beyond
_RESUBSCRIBE_PAUSE = 1.0

R = TypeVar("R")  # a job the worker runs


class EarlyCancels:
    """Cancels heard for jobs not running here, which the worker may have taken already (their cancel
    marker read with the move) but not launched yet: a launch claims its job's.  The oldest are forgotten
    beyond :data:`EARLY_CANCELS_KEPT`."""

    def __init__(self) -> None:
        self._job_ids: dict[str, None] = {}  # in the order heard

    def note(self, job_id: str) -> None:
        if len(self._job_ids) >= EARLY_CANCELS_KEPT:
            self._job_ids.pop(next(iter(self._job_ids)))
        self._job_ids[job_id] = None

    def claim(self, job_id: str) -> bool:
        """Whether ``job_id`` was cancelled before its launch (forgotten here from now on)."""
        return self._job_ids.pop(job_id, 0) is None

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._job_ids


@dataclass(frozen=True, slots=True)
class StopRequest:
    job_id: str | None  # None: stop the worker (warm shutdown)


def parse(channel: bytes | str, data: bytes | str) -> StopRequest | None:
    """The request a pub/sub message carries, or None if it is not one."""
    channel = channel.decode() if isinstance(channel, bytes) else channel
    text = data.decode() if isinstance(data, bytes) else data
    if channel == keys.CANCEL_CHANNEL:
        return StopRequest(text) if text else None
    try:
        command = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(command, dict):
        return None
    if command.get("command") == "shutdown":
        return StopRequest(None)
    if command.get("command") in ("stop-job", "stop-execution") and command.get("job_id"):
        return StopRequest(str(command["job_id"]))
    return None


async def listen(
    redis: aredis.Redis,
    worker_channel: str,
    on_request: Callable[[StopRequest], None],
    on_resubscribed: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Deliver every stop request until cancelled, resubscribing after a lost connection.  A cancel
    published while the subscription was down is lost to it: ``on_resubscribed`` runs once it is back
    (the worker reads its running jobs' cancel markers then, which the ingress sets with each cancel)."""
    lost = False
    while True:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(keys.CANCEL_CHANNEL, worker_channel)
            if lost and on_resubscribed is not None:
                lost = False
                await on_resubscribed()
            async for message in pubsub.listen():
                request = parse(message["channel"], message["data"])
                if request is not None:
                    on_request(request)
        except (RedisError, OSError):
            lost = True
            log.warning("stop-request subscription lost; resubscribing", exc_info=True)
            await asyncio.sleep(_RESUBSCRIBE_PAUSE)
        finally:
            await pubsub.aclose()


class StopRequestHandler(Generic[R]):
    def __init__(
        self,
        worker: BaseWorker,
        redis: aredis.Redis,
        *,
        runs: Mapping[str, R],
        stop: Callable[[R, str], None],
        stop_worker: Callable[[], None],
        early_cancels: EarlyCancels,
    ) -> None:
        """``runs`` are the worker's jobs by id and ``stop`` stops one; ``early_cancels`` keeps the cancels
        of jobs not running here, which the worker claims when it launches a job."""
        self._worker = worker
        self._redis = redis
        self._runs = runs
        self._stop = stop
        self._stop_worker = stop_worker
        self._early_cancels = early_cancels

    def on_request(self, request: StopRequest) -> None:
        """Stop the worker, or cancel the job where it runs, or keep the cancel for the job's launch."""
        if request.job_id is None:
            self._stop_worker()
            return
        run = self._runs.get(request.job_id)
        if run is not None:
            self._worker.log.info("Worker %s: cancelling job %s", self._worker.name, request.job_id)
            self._stop(run, "cancelled")
            return
        # A job this worker may have taken already, its cancel marker read with the move, but not
        # launched yet (the move's reply and this cancel arrived in the same pass): its launch checks here.
        self._early_cancels.note(request.job_id)

    async def read_cancel_markers(self) -> None:
        """Stop the running jobs whose cancel marker is set: their cancel may have been published while
        the stop-request subscription was down (Redis restarting), and nobody heard it."""
        job_ids = list(self._runs)
        if not job_ids:
            return
        markers = await run_commands(
            self._redis, [(("EXISTS", keys.cancelled_marker(j)), {}) for j in job_ids]
        )
        for job_id, marked in zip(job_ids, markers, strict=True):
            if marked:
                self.on_request(StopRequest(job_id))


def handle_signals(loop: asyncio.AbstractEventLoop, handler: Callable[[], None]) -> list[signal.Signals]:
    """SIGTERM/SIGINT request a warm stop, when this loop may handle signals (the main thread's can)."""
    handled = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, handler)
        except (ValueError, RuntimeError, NotImplementedError):
            continue
        handled.append(sig)
    return handled
