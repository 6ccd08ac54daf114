"""Taking one job off a pool's queue, with what the worker reads to start it, in one round trip.

rq's data model keeps ids in the queue and each job in its own hash, so a stock worker needs two round
trips before it can start a job: the move (``BLMOVE`` from the queue to rq's intermediate list) and the
read of the job.  Here the read rides behind the move, pipelined on the same connection: a script
(``shared/lua/job_take_read.lua``) that Redis runs once the move is served (however long it blocked),
which reads the job at the intermediate list's tail: the job's hash, its cancel marker, the deployments
whose breaker is not closed and whether anybody still subscribes to the job's reply channel
(:class:`StartReads`), and the queue's length.  On an idle pool that takes one wake-up of Redis and one
of the worker off the path of every request.

The reply channel's ``PUBSUB NUMSUB`` is what keeps the queued jobs of a dead ingress (killed with -9,
its jobs still queued) off the upstream: a job whose channel has no subscriber as it is taken is dropped
before its start (:attr:`StartReads.unheard`).  The script finds the channel in a field of the job's
hash (:data:`shared.jobs.REPLY_CHANNEL_FIELD`); a job without one (a batch line, whose channel nobody
reads by design, or a job an older ingress enqueued) is not checked.

Redis may run other clients' commands between the two (a served BLMOVE's client is resumed at the end
of the pass), so another worker's move can land on the intermediate list first; the script returns the
id it read, and a read of another job is dropped (:attr:`Taken.reads` is None): the worker then reads
its job itself (:func:`start_reads`).  Everything the script returns is looked up by that id, so a
mismatch costs one round trip, never a wrong job.  A move that took nothing (a BLMOVE that timed out,
about once a second on an idle worker) still has its script read the list's tail, usually empty
between jobs; what it read is dropped.

A job read on its own (:func:`start_read_commands`: the batch lane's lines, and a move that raced
another worker's) is taken as heard: its channel is known only once its hash is read, so a ``PUBSUB
NUMSUB`` would cost a second round trip, for batch lines that are never checked and a race that is rare.
Such a job of a dead ingress is still dropped unrun when its worker has seen its channel unheard before
(``AsyncWorker._ingress_gone``), else it learns it at its first publish; its hold is released either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aredis
from redis.exceptions import NoScriptError, RedisError
from rq.job import Job

from shared import keys
from shared.jobs import REPLY_CHANNEL_FIELD
from shared.lua import LuaScript
from shared.redis_commands import Command, run_commands

TAKE_READ: Final = LuaScript.load("job_take_read")


@dataclass(frozen=True, slots=True)
class StartReads:
    """What starting a job reads: its hash (empty if it vanished), whether it was cancelled, the
    deployments whose breaker is not closed, and whether its reply channel had no subscriber as it was
    taken (only the take script asks, and only of a job whose hash names its channel)."""

    job_hash: dict[bytes, bytes]
    cancelled: bool
    broken: list[Any]
    unheard: bool = False


@dataclass(frozen=True, slots=True)
class Taken:
    """A job id taken off the queue, and its :class:`StartReads` when they came with the move."""

    job_id: str
    reads: StartReads | None


@dataclass(frozen=True, slots=True)
class Dequeued:
    """The jobs one round trip took, in queue order, and how many were left in the queue after them
    (None when the reads did not come back: a server without the script)."""

    jobs: list[Taken]
    queued: int | None


def start_read_commands(job_id: str) -> list[Command]:
    """The reads that start ``job_id`` (their replies: :func:`start_reads`)."""
    return [
        (("HGETALL", Job.key_for(job_id)), {}),
        (("EXISTS", keys.cancelled_marker(job_id)), {}),
        (("ZRANGE", keys.BREAKER_BLOCKED, 0, -1), {}),
    ]


def start_reads(replies: list[Any]) -> StartReads:
    """:class:`StartReads` from the replies of :func:`start_read_commands`; the job taken as heard."""
    job_hash, cancelled, broken = replies
    return StartReads(dict(job_hash or {}), bool(cancelled), list(broken or []))


async def take(
    client: aredis.Redis, source: str, target: str, *, block: int | None, count: int = 1
) -> Dequeued:
    """Move up to ``count`` jobs from the head of ``source`` to the tail of ``target``, each read in the
    same round trip.  The first move waits up to ``block`` seconds for a job (None: no move waits).

    ``client`` has a connection of its own (a move may block it): a plain redis-py client, or an
    auto-pipelined one only this caller uses.  A move Redis refused raises its error (what the others
    moved, rq's intermediate-queue clean-up fails)."""
    commands: list[Command] = []
    arguments = (*keys.job_read_prefixes(), REPLY_CHANNEL_FIELD)
    read = ("EVALSHA", TAKE_READ.sha, 3, target, keys.BREAKER_BLOCKED, source, *arguments)
    for n in range(count):
        if n == 0 and block is not None:
            commands.append((("BLMOVE", source, target, "LEFT", "RIGHT", block), {}))
        else:
            commands.append((("LMOVE", source, target, "LEFT", "RIGHT"), {}))
        commands.append((read, {}))
    replies = await run_commands(client, commands, raise_on_error=False)
    moves, reads = replies[::2], replies[1::2]
    error = next((reply for reply in moves if isinstance(reply, Exception)), None)
    if error is not None:
        raise error
    jobs = [job for job in map(taken, moves, reads) if job is not None]
    if any(isinstance(read, NoScriptError) for read in reads):  # a new server: load it for the next moves
        await load_script(client)
    moved = [index for index, reply in enumerate(moves) if reply is not None]
    last = reads[moved[-1] if moved else 0]  # read right after the last move that took a job
    return Dequeued(jobs, int(last[4]) if isinstance(last, list) else None)


def taken(moved: Any, read: Any) -> Taken | None:
    """The job one move took, if any, from what the move replied (``moved``: the id, or None) and what the
    script read (its reply, or the error Redis answered): the reads are kept only if they are of that job."""
    if moved is None:
        return None
    job_id = _text(moved)
    if not isinstance(read, list) or not read[0] or _text(read[0]) != job_id:
        return Taken(job_id, None)
    _, flat, cancelled, broken, _, listeners = read
    job_hash = dict(zip(flat[::2], flat[1::2], strict=True))
    return Taken(job_id, StartReads(job_hash, bool(cancelled), list(broken), unheard=listeners == 0))


async def load_script(client: aredis.Redis) -> None:
    """Have the server know the read's script (a worker calls this as it starts; a server restarted since
    answers the move's read ``NOSCRIPT``, and :func:`take` loads it then).  Best effort."""
    try:
        await client.script_load(TAKE_READ.source)
    except RedisError:
        pass  # the next move tries again; its job is read on its own meanwhile


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def next_batch(batch: int, *, wanted: int, moved: int, short: bool, prefetch: int) -> int:
    """The dequeue loop's next batch of moves after one that ``wanted`` jobs and ``moved`` that many:
    twice as many (up to ``prefetch``) while the queue keeps up with the batch, else what it held (at
    least one), so that the batch follows the queue back down when it runs short."""
    if moved == wanted and not short:
        return min(prefetch, batch * 2)
    return max(1, moved)
