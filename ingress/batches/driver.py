"""The batch driver: the one process (``aiorouter batches``) that moves every batch along.

Each round (``BatchSettings.poll_interval``) it validates new batches, collects the results workers
recorded, runs lost lines again, ends the batches of suspended accounts, feeds lines into each pool's
batch lane and finalizes finished batches.
Feeding is bounded and fair: at most ``lines_in_flight`` lines per pool are queued or running, and the
free room is dealt one line at a time round-robin across accounts, then across each account's batches,
so a 100-line batch never waits behind a 50,000-line one.

Only the holder of a lease (:data:`shared.keys.BATCH_DRIVER_LEASE`) drives: several may run for
availability, one works; a killed holder's lease expires after ``driver_lease`` seconds.  Everything the
driver knows is in Redis and storage, so a new holder picks up where the last one stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from dataclasses import replace

import redis.asyncio as aredis
from redis.exceptions import RedisError

from ingress.batches import files, records
from ingress.batches.batch_run import LOST_CHECK_INTERVAL, BatchRun
from ingress.batches.dispatch import PlannedLine, dispatch
from ingress.batches.finalize import cleanup, finalize
from ingress.batches.input_lines import BatchLine
from ingress.batches.lost_lines import lost_attempts, stuck_after
from ingress.batches.storage import FileStorage
from ingress.batches.validate_batch import account_plan, validate_batch
from ingress.batches.wind_down import ACCOUNT_SUSPENDED, BATCH_EXPIRED, INPUT_FILE_MISSING, wind_down
from ingress.failure_streak import FailureStreak
from ingress.provider_preferences import ProviderPreferences
from ingress.routing import ModelRouter
from shared import credits, keys
from shared.batch_lines import LineRef
from shared.errors import InvalidRequest, ServiceUnavailable
from shared.lua import LuaScript
from shared.settings import BatchSettings, Deployment, Settings

log = logging.getLogger(__name__)

LEASE = LuaScript.load("batch_driver_lease")
FILE_SWEEP_INTERVAL = 60.0
MAX_FAILURE_PAUSE = 2.0  # seconds between two rounds at most, while they fail (doubling from poll_interval)
BUSY_PAUSE = 0.01  # seconds between two rounds while lines move fast
BUSY_SHARE = 4  # a round moving 1/BUSY_SHARE of `lines_in_flight` or more is one of lines moving fast


def pause_after(moved: int, bounds: BatchSettings) -> float:
    """Seconds to wait after a round that moved ``moved`` lines: a round that moved a quarter of the
    window or more is followed almost at once (the lanes drain fast and want feeding); a trickle of lines
    (lanes yielding to interactive traffic) or none waits ``poll_interval``, so the driver never spins."""
    return BUSY_PAUSE if moved >= max(1, bounds.lines_in_flight // BUSY_SHARE) else bounds.poll_interval


def failure_pause(failures: int, bounds: BatchSettings) -> float:
    """Seconds before the next round after ``failures`` failed in a row: from ``poll_interval``, doubling
    up to :data:`MAX_FAILURE_PAUSE`, so a Redis outage is retried promptly and not hammered."""
    return float(min(MAX_FAILURE_PAUSE, bounds.poll_interval * 2 ** min(failures, 16)))


class BatchDriver:
    def __init__(
        self,
        settings: Settings,
        redis: aredis.Redis,
        storage: FileStorage,
        router: ModelRouter,
        name: str = "",
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.storage = storage
        self.router = router
        self.name = name or f"batches-{uuid.uuid4().hex[:12]}"
        self.runs: dict[str, BatchRun] = {}
        self.price_factors: dict[str, float] = {}
        self._turn = 0
        self._last_sweep = 0.0
        self._finish_failures: dict[str, FailureStreak] = {}  # by batch id, while its finalizing fails

    async def run(self, stop: asyncio.Event) -> None:
        """Drive batches until ``stop`` is set."""
        renewal = asyncio.create_task(self._renew_lease(stop))
        try:
            await self._drive(stop)
        finally:
            renewal.cancel()
            await asyncio.gather(renewal, return_exceptions=True)

    async def _renew_lease(self, stop: asyncio.Event) -> None:
        """Keep the lease alive during a long round (validating a large file), between the rounds' own
        renewals; a renewal that finds another holder changes nothing (the next round sees it)."""
        every = self.settings.batches.driver_lease / 3
        while not stop.is_set():
            await asyncio.sleep(every)
            try:
                await self.hold_lease()
            except Exception:  # the next round retries, and reports
                log.debug("batch driver lease renewal failed", exc_info=True)

    async def _drive(self, stop: asyncio.Event) -> None:
        bounds = self.settings.batches
        failures = FailureStreak(log, "batch driver rounds")
        while not stop.is_set():
            moved = 0
            try:
                if await self.hold_lease():
                    moved = await self.round()
                else:
                    self.runs.clear()  # another driver works: forget, reload from Redis when back
                failures.succeeded()
            except (RedisError, OSError) as exc:  # Redis down or restarting: no traceback
                failures.failed("batch driver: Redis failed (%s)", exc)
                self.runs.clear()  # forget what this process knew, reload it from Redis
            except Exception:  # never stop driving
                failures.failed("batch driver round failed; reloading its state", traceback=True)
                self.runs.clear()
            pause = failure_pause(failures.count, bounds) if failures.count else pause_after(moved, bounds)
            try:
                await asyncio.wait_for(stop.wait(), pause)
            except TimeoutError:
                pass

    async def hold_lease(self) -> bool:
        lease_ms = int(self.settings.batches.driver_lease * 1000)
        return bool(await LEASE(self.redis, [keys.BATCH_DRIVER_LEASE], [self.name, lease_ms]))

    async def round(self) -> int:
        """One round over every active batch; how many lines it moved (results collected, lines fed)."""
        await self._load()
        moved = 0
        for run in list(self.runs.values()):
            moved += await run.collect(self.redis, self.storage)
            await self._recover_lost(run)
        await self._end_suspended()
        for run in list(self.runs.values()):
            if run.ending:
                await wind_down(self.redis, run, self.storage, self.settings.models)
        moved += await self._feed([run for run in self.runs.values() if not run.ending])
        await self._end_unreadable()  # found while reading lines: wound down from the next round
        for run in list(self.runs.values()):
            if run.cursor >= run.total and not run.in_flight() and not run.retries:
                await self._finish(run)
        for batch_id in [b for b in self._finish_failures if b not in self.runs]:
            del self._finish_failures[batch_id]  # ended, or forgotten (reloaded next round)
        if time.monotonic() - self._last_sweep > FILE_SWEEP_INTERVAL:
            self._last_sweep = time.monotonic()
            await files.sweep_expired(self.redis, self.storage)
        return moved

    async def _finish(self, run: BatchRun) -> None:
        """Collect a batch's last results and finalize it.  A failure of this batch's own (not Redis':
        that ends the round) is logged and the batch retried next round, while the other batches and
        the file sweep go on."""
        try:
            await run.collect(self.redis, self.storage, force=True)
            if not run.inflight and await self.redis.hlen(keys.batch_results(run.id)) == 0:
                ending = run.ending
                if ending == BATCH_EXPIRED and run.record.fields.get("ending") != BATCH_EXPIRED:
                    ending = ""  # the window passed once every line had been dispatched: they all ran
                await finalize(self.redis, self.storage, run.record, ending, self.settings.batches)
                del self.runs[run.id]
                self._finish_failures.pop(run.id, None)
        except (RedisError, OSError):
            raise
        except Exception:
            streak = self._finish_failures.setdefault(run.id, FailureStreak(log, f"batch {run.id} endings"))
            streak.failed("batch %s: finalizing failed; retried next round", run.id, traceback=True)

    async def _load(self) -> None:
        found = await self.redis.zrange(keys.BATCHES_ACTIVE, 0, -1)
        ids = [raw.decode() if isinstance(raw, bytes) else str(raw) for raw in found]
        loaded = await records.load_batches(self.redis, ids)
        for batch_id, record in zip(ids, loaded, strict=True):
            if record is None:
                await self.redis.zrem(keys.BATCHES_ACTIVE, batch_id)
                self.runs.pop(batch_id, None)
            elif record.status == "validating":
                await validate_batch(self.redis, self.storage, self.settings, record)
            elif record.status in records.FINAL:
                await cleanup(self.redis, self.storage, record)
                self.runs.pop(batch_id, None)
            elif batch_id in self.runs:
                self.runs[batch_id].record = record
            else:
                input_file_id = record.fields["input_file_id"]
                await files.hold_input(self.redis, input_file_id, batch_id)  # a batch older than the set
                key = files.storage_key(input_file_id)  # kept while the batch runs
                self.runs[batch_id] = await BatchRun.load(self.redis, record, key)
                plan = await account_plan(self.redis, self.settings, record.account_id)
                self.price_factors[record.account_id] = plan.batch_price_factor

    async def _end_unreadable(self) -> None:
        """A running batch whose input's content is no longer stored (lost by the storage: a deleted
        file's content stays while a batch reads it) ends (``input_file_missing``): its lines not yet
        read fail, the others run to their end; the other batches go on."""
        for run in self.runs.values():
            if run.input_missing and not run.ending:
                log.error("batch %s: its input file's content is no longer stored; ending it", run.id)
                # an ending already written this round (out of credit) stays; the next load reads it
                await self.redis.hsetnx(keys.batch_record(run.id), "ending", INPUT_FILE_MISSING)
                fields = {**run.record.fields, "ending": INPUT_FILE_MISSING}
                run.record = replace(run.record, fields=fields)

    async def _end_suspended(self) -> None:
        """The running batches of a suspended account end (``account_suspended``): their lines not
        yet run fail, those waiting in a lane are taken back, those a worker started run to their end."""
        runs = [run for run in self.runs.values() if not run.ending]
        accounts = sorted({run.account_id for run in runs})
        if not accounts:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for account_id in accounts:
                pipe.hget(keys.account(account_id), "status")
            statuses = await pipe.execute()
        suspended = {a for a, s in zip(accounts, statuses, strict=True) if s in (b"suspended", "suspended")}
        for run in runs:
            if run.account_id in suspended:
                await self.redis.hset(keys.batch_record(run.id), "ending", ACCOUNT_SUSPENDED)
                run.record = replace(run.record, fields={**run.record.fields, "ending": ACCOUNT_SUSPENDED})

    async def _recover_lost(self, run: BatchRun) -> None:
        if time.monotonic() - run.last_lost_check < LOST_CHECK_INTERVAL:
            return
        run.last_lost_check = time.monotonic()
        lost = await lost_attempts(
            self.redis,
            run.id,
            run.in_flight(),
            stuck_after=stuck_after(self.settings.worker_dead_after),
            out_of_lane_since=run.out_of_lane_since,
        )
        failed: list[tuple[LineRef, str, str]] = []
        for attempt in lost:
            del run.inflight[attempt.index]
            # First disown the job (a worker only paused may still end it: its result is refused, as it
            # goes unpaid), then release its hold.  The entry stays, naming no job, until the line is
            # dispatched again: a driver taking over finds it lost too.
            disowned = replace(attempt, job_id="").to_wire()
            await self.redis.hset(keys.batch_inflight(run.id), str(attempt.index), disowned)
            await credits.release(self.redis, attempt.reservation)
            if attempt.attempt < self.settings.batches.max_attempts and not run.ending:
                run.retries.append(attempt)
            else:
                ref = LineRef(run.id, attempt.index, attempt.custom_id)
                message = (
                    f"The line failed on each of its {attempt.attempt} attempt(s): no deployment answered."
                )
                failed.append((ref, "line_failed", message))
        if failed:
            await run.fail_lines(self.redis, failed)

    async def _feed(self, runs: list[BatchRun]) -> int:
        """Deal each pool's free room round-robin across accounts, then their batches, then dispatch."""
        room: dict[str, int] = {}
        for run in self.runs.values():
            for attempt in run.in_flight():
                room[attempt.pool] = room.get(attempt.pool, 0) - 1
        window = self.settings.batches.lines_in_flight
        by_account: dict[str, deque[BatchRun]] = {}
        for run in runs:
            if run.retries or run.cursor < run.total:
                by_account.setdefault(run.account_id, deque()).append(run)
        accounts = sorted(by_account)
        if not accounts:
            return 0
        self._turn = (self._turn + 1) % len(accounts)
        accounts = accounts[self._turn :] + accounts[: self._turn]
        planned: list[PlannedLine] = []
        blocked: set[str] = set()
        progress = True
        while progress:
            progress = False
            for account in accounts:
                queue = by_account[account]
                for _ in range(len(queue)):
                    run = queue[0]
                    queue.rotate(-1)
                    if run.id in blocked:
                        continue
                    line = await self._next(run, room, window)
                    if line is None:
                        blocked.add(run.id)
                        continue
                    planned.append(line)
                    room[line.deployment.provider] = room.get(line.deployment.provider, 0) - 1
                    progress = True
                    break
        await dispatch(self.redis, self.settings, planned, self.price_factors)
        return len(planned)

    async def _next(self, run: BatchRun, room: dict[str, int], window: int) -> PlannedLine | None:
        """The run's next line to dispatch, if its pool has room (None: nothing more from this run now)."""
        while run.retries:
            attempt = run.retries[0]
            entry = self.settings.models.get(attempt.model)
            if entry is None:  # the catalog dropped its model since: it fails, as its unread lines do
                run.retries.pop(0)
                ref = LineRef(run.id, attempt.index, attempt.custom_id)
                message = f"The model '{attempt.model}' does not exist."
                await run.fail_lines(self.redis, [(ref, "model_not_found", message)])
                continue
            try:
                deployment = await self._route(entry.id, attempt.preferences, avoid=attempt.pool)
            except InvalidRequest as exc:  # its provider.order names none of the model's providers now
                run.retries.pop(0)
                ref = LineRef(run.id, attempt.index, attempt.custom_id)
                await run.fail_lines(self.redis, [(ref, exc.code or "invalid_value", exc.message)])
                continue
            if deployment is None or window + room.get(deployment.provider, 0) <= 0:
                return None
            run.retries.pop(0)
            return PlannedLine(
                run,
                attempt.index,
                attempt.custom_id,
                entry,
                deployment,
                attempt.body,
                attempt.attempt + 1,
                False,
                attempt.preferences,
            )
        while True:
            item = await run.next_line(self.storage, dict(self.settings.models))
            if item is None:
                return None
            if isinstance(item, BatchLine):
                break
            ref = LineRef(run.id, run.cursor, item.custom_id)
            run.consume()
            await run.fail_lines(self.redis, [(ref, item.code, item.message)], cursor=run.cursor)
        preferences = item.request.preferences
        deployment = await self._route(item.request.model, preferences)
        if deployment is None or window + room.get(deployment.provider, 0) <= 0:
            return None
        run.consume()
        entry = self.settings.models[item.request.model]
        body = item.request.body
        return PlannedLine(run, item.index, item.custom_id, entry, deployment, body, 1, True, preferences)

    async def _route(
        self, model: str, preferences: ProviderPreferences, avoid: str = ""
    ) -> Deployment | None:
        """The deployment a line runs on: routing's first choice within the line's ``provider``
        preferences, or for a line run again, the first such one on another pool than its last attempt's
        (as an interactive request falls back)."""
        try:
            plan = await self.router.route(model, preferences)
        except ServiceUnavailable:
            return None  # every deployment's breaker is open: the line waits
        others = [d for d in plan.deployments if d.provider != avoid]
        return (others or list(plan.deployments))[0]
