"""One pipeline for the frames of many jobs: the worker's Redis writes per round trip, not per job.

Every job of a worker publishes its own frames (``S``, ``C``…, ``D``/``E`` with rq's bookkeeping).  Sent
one job at a time, each would be a pipeline of its own to build, send and read back, so a worker's Redis
work would grow with the number of its streams.  :class:`PublishBatcher` queues what every job submits
and sends it in one pipeline; what is submitted while that pipeline is on the wire goes out in the next
one.  In a pipeline, the submissions' commands come first, then one ``PUBLISH`` per channel with every
frame for it (a bundle, :mod:`shared.events`; one ``PUBLISH`` per frame on a channel that does not take
bundles): Redis fans out and the ingress reads one message per round trip, not one per frame.  Batches go
out one after another, and a bundle keeps the submission order, so each job's frames keep the order in
which they were submitted, and a job's commands run before its frames are published.  A batch with
commands besides its ``PUBLISH`` commands runs in ``MULTI``…``EXEC``: Redis runs none of it unless all of it
arrived, so a worker killed (or a connection cut) in the middle of writing it leaves no settlement
without its frame.  A job's command that Redis rejects (or a ``PUBLISH`` of its frames) fails that job's
submission only (one Redis refuses to queue fails the transaction: its submissions are then sent one
by one).  A submission's
result is the reply of the ``PUBLISH`` that carried its last frame: how many subscribers received it (0:
nobody listens on that channel any more).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aredis
from redis.exceptions import RedisError, ResponseError

from shared import events, keys
from shared.redis_commands import Command, run_commands


@dataclass(slots=True)
class _Submission:
    commands: Sequence[Command]
    channel: str
    frames: list[bytes]
    done: asyncio.Future[int]


class PublishBatcher:
    """Shared by every job of a worker process (one event loop)."""

    def __init__(self, redis: aredis.Redis) -> None:
        self._redis = redis
        self._queue: list[_Submission] = []
        self._sender: asyncio.Task[None] | None = None
        self.pipelines = 0  # round trips made, for tests and stats

    def submit(self, commands: Sequence[Command], channel: str, frames: list[bytes]) -> asyncio.Future[int]:
        """Queue ``commands`` then a ``PUBLISH`` of each frame on ``channel``; the future resolves, to the
        subscribers the last frame reached, when Redis has run them (or fails with the
        ``RedisError``/``OSError`` that stopped them)."""
        loop = asyncio.get_running_loop()
        submission = _Submission(commands, channel, frames, loop.create_future())
        self._queue.append(submission)
        if self._sender is None:
            self._sender = loop.create_task(self._send())
        return submission.done

    async def _send(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._send_batch(batch)
        finally:
            self._sender = None

    async def _send_batch(self, batch: list[_Submission]) -> None:
        commands: list[Command] = []
        by_channel: dict[str, list[int]] = {}  # channel -> the submissions with frames for it, in order
        for index, submission in enumerate(batch):
            commands.extend(submission.commands)
            if submission.frames:
                by_channel.setdefault(submission.channel, []).append(index)
        publishes: dict[int, tuple[int, int]] = {}  # submission -> the PUBLISHes carrying its frames
        for channel, indexes in by_channel.items():
            if keys.takes_bundles(channel) and sum(len(batch[i].frames) for i in indexes) > 1:
                frames = [frame for i in indexes for frame in batch[i].frames]
                commands.append((("PUBLISH", channel, events.bundle(frames)), {}))
                publishes.update((i, (len(commands) - 1, len(commands))) for i in indexes)
                continue
            for i in indexes:
                start = len(commands)
                commands.extend((("PUBLISH", channel, frame), {}) for frame in batch[i].frames)
                publishes[i] = (start, len(commands))
        try:
            # With writes besides its PUBLISHes (a final frame's settlement), a batch runs as one
            # transaction: a write cut midway (the worker killed, the connection lost) runs none of it,
            # so no request is charged while its frame never went out.
            atomic = any(submission.commands for submission in batch)
            replies = await run_commands(self._redis, commands, raise_on_error=False, transaction=atomic)
        except ResponseError as exc:  # a command Redis refused to queue failed them all
            if len(batch) == 1:
                _settle(batch[0].done, exc, 0)
            else:  # each on its own, so that only the submission with that command fails
                for submission in batch:
                    await self._send_batch([submission])
            return
        except (RedisError, OSError) as exc:
            for submission in batch:
                _settle(submission.done, exc, 0)
            return
        finally:
            self.pipelines += 1
        start = 0
        for index, submission in enumerate(batch):
            end = start + len(submission.commands)
            own = replies[start:end]
            if index in publishes:
                first, last = publishes[index]
                own += replies[first:last]
            failed = next((r for r in own if isinstance(r, Exception)), None)
            _settle(submission.done, failed, own[-1] if submission.frames else 1)
            start = end


def _settle(done: asyncio.Future[int], error: BaseException | None, receivers: int) -> None:
    if done.done():  # its job was cancelled while waiting: what it queued went out all the same
        return
    if error is None:
        done.set_result(receivers)
    else:
        done.set_exception(error)
