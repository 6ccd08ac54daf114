"""The worker's batch lane on a real Redis: it takes batch lines only while no interactive job waits,
never more than its share of the worker's slots, and records a batch line's result exactly once."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import redis.asyncio as aredis
from rq.intermediate_queue import IntermediateQueue

from shared import batch_lines, keys
from shared.batch_lines import LineRef
from shared.errors import UpstreamBadRequest, UpstreamUnavailable
from shared.jobs import CompletionJob
from shared.redis_commands import replay
from tests.waiting import eventually
from workers.batch_lane import BatchLane
from workers.batch_results import result_commands

pytestmark = pytest.mark.redis

LANE = keys.rq_queue_key(keys.batch_lane("sim"))
INTERACTIVE = keys.rq_queue_key("sim")


async def _lane_taking(
    client: aredis.Redis, *, running: int, concurrency: int = 8, prefetch: int = 32
) -> list[str]:
    launched: list[str] = []
    loop = asyncio.get_running_loop()

    def launch(job_id: str, origin: str) -> asyncio.Future[None]:
        launched.append(job_id)
        return loop.create_future()  # never ends

    lane = BatchLane(
        client,
        pool="sim",
        concurrency=concurrency,
        interactive_reserve=0.25,
        running=lambda: running + len(launched),
        launch=launch,
        unstarted_room=lambda: prefetch - len(launched),  # nothing launched here ever starts
    )
    task = asyncio.create_task(lane.run())
    await asyncio.sleep(0.3)  # a few rounds of the lane (no event to wait on: it must do nothing more)
    lane.stop()
    await task
    return launched


async def test_lane_fills_only_its_share_of_spare_slots(aredis_client: aredis.Redis) -> None:
    """With 8 slots, 25% reserved and 2 busy, the lane launches 4 lines and leaves the rest queued."""
    await aredis_client.rpush(LANE, *[f"job-{n}" for n in range(10)])
    launched = await _lane_taking(aredis_client, running=2)
    assert launched == [f"job-{n}" for n in range(4)]
    assert await aredis_client.llen(LANE) == 6
    intermediate = IntermediateQueue.get_intermediate_queue_key(LANE)
    assert await aredis_client.lrange(intermediate, 0, -1) == [f"job-{n}".encode() for n in range(4)]


async def test_lane_holds_no_more_unstarted_lines_than_the_worker_prefetches(
    aredis_client: aredis.Redis,
) -> None:
    """With room for 6 lines but worker_prefetch 2, the lane takes 2 lines while they have not started."""
    await aredis_client.rpush(LANE, *[f"job-{n}" for n in range(10)])
    launched = await _lane_taking(aredis_client, running=0, prefetch=2)
    assert launched == ["job-0", "job-1"]
    assert await aredis_client.llen(LANE) == 8


async def test_lane_yields_to_a_queued_interactive_job(aredis_client: aredis.Redis) -> None:
    """While an interactive job waits in the pool's queue, the lane takes no batch line."""
    await aredis_client.rpush(LANE, "batch-1")
    await aredis_client.rpush(INTERACTIVE, "chat-1")
    assert await _lane_taking(aredis_client, running=0) == []
    assert await aredis_client.llen(LANE) == 1


async def _takes(
    client: aredis.Redis, monkeypatch: pytest.MonkeyPatch, *, interactive: int, lines: int
) -> list[int]:
    """How many lines each of the lane's takes asked for, until it launched ``lines`` lines, with
    ``interactive`` interactive jobs running on the worker."""
    from workers import batch_lane
    from workers.lane_throttle import LaneThrottle

    asked: list[int] = []
    take = batch_lane.TAKE

    async def counting(redis: aredis.Redis, keys_: list[str], args: list[int]) -> object:
        asked.append(args[0])
        return await take(redis, keys_, args)

    monkeypatch.setattr(batch_lane, "TAKE", counting)
    launched: list[str] = []
    loop = asyncio.get_running_loop()

    def launch(job_id: str, origin: str) -> asyncio.Future[None]:
        launched.append(job_id)
        return loop.create_future()

    lane = BatchLane(
        client,
        pool="sim",
        concurrency=64,
        interactive_reserve=0.1,
        running=lambda: interactive + len(launched),
        launch=launch,
        unstarted_room=lambda: 64,
        # the loop never lags here: the limit stays full, only the pace of taking changes
        throttle=LaneThrottle(57, yield_lag=1.0, floor=1, interactive_grace=60.0),
    )
    task = asyncio.create_task(lane.run())
    await eventually(lambda: len(launched) >= lines)
    lane.stop()
    await task
    return [count for count in asked if count]


async def test_beside_interactive_jobs_lines_start_one_at_a_time(
    aredis_client: aredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While interactive jobs run, each take asks for one line (paced apart), so a window's worth of lines
    never starts in one burst of the loop; with none running, one take asks for many."""
    await aredis_client.rpush(LANE, *[f"job-{n}" for n in range(40)])
    assert set(await _takes(aredis_client, monkeypatch, interactive=1, lines=5)) == {1}
    await aredis_client.delete(LANE)
    await aredis_client.rpush(LANE, *[f"job-{n}" for n in range(40)])
    assert (await _takes(aredis_client, monkeypatch, interactive=0, lines=32))[0] == 32


def _job(line: int, job_id: str = "req1") -> CompletionJob:
    ref = LineRef("batch_x", line, f"c-{line}")
    extra = {batch_lines.EXTRA_KEY: ref.to_wire()}
    return CompletionJob(job_id, "", "m", "sim", "echo", False, False, {}, 0, extra=extra)


async def _in_flight(client: aredis.Redis, line: int, job_id: str) -> None:
    """Make ``job_id`` the line's attempt in flight, as the driver's dispatch records it."""
    await client.hset(keys.batch_inflight("batch_x"), str(line), orjson.dumps({"job": job_id, "attempt": 1}))


async def _run(client: aredis.Redis, commands: list[tuple[tuple[object, ...], dict[str, object]]]) -> None:
    async with client.pipeline(transaction=False) as pipe:
        replay(pipe, commands)
        await pipe.execute()


async def test_results_go_to_the_output_or_error_file_once(aredis_client: aredis.Redis) -> None:
    """An answer is an output line; a refusal an error line; a second result of a line is dropped;
    a retryable failure records nothing (the driver runs the line again)."""
    body = b'{"id":"chatcmpl-1","object":"chat.completion"}'
    for line in range(3):
        await _in_flight(aredis_client, line, "req1")
    await _run(aredis_client, result_commands(_job(0), error=None, payload=body, meta={}))
    refused = UpstreamBadRequest("bad")
    await _run(aredis_client, result_commands(_job(1), error=refused, payload=b"", meta={}))
    await _run(aredis_client, result_commands(_job(0), error=refused, payload=b"", meta={}))
    retry = UpstreamUnavailable("down")
    assert result_commands(_job(2), error=retry, payload=b"", meta={"retryable": True}) == []
    results = await aredis_client.hgetall(keys.batch_results("batch_x"))
    assert set(results) == {b"0", b"1"}
    kind, line = results[b"0"][:1], orjson.loads(results[b"0"][1:])
    assert kind == b"O" and line["custom_id"] == "c-0" and line["response"]["status_code"] == 200
    assert line["response"]["body"]["id"] == "chatcmpl-1" and line["error"] is None
    error = orjson.loads(results[b"1"][1:])
    assert results[b"1"][:1] == b"E" and error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["code"] == "upstream_bad_request"


def test_lane_limit_keeps_a_slot_for_interactive_jobs() -> None:
    """The lane never takes every slot of a multi-slot worker; a one-slot worker still runs lines."""
    from workers.batch_lane import lane_limit

    assert lane_limit(64, 0.1) == 57
    assert lane_limit(4, 0.1) == 3
    assert lane_limit(2, 0.5) == 1
    assert lane_limit(1, 0.1) == 1
    assert lane_limit(8, 0.0) == 8


async def test_only_the_lines_attempt_in_flight_records_a_result(aredis_client: aredis.Redis) -> None:
    """A job the driver disowned as lost (its entry now names no job, or the line's next attempt) records
    nothing, though it ends well; the attempt in flight does.  Once the batch is finalized (no in-flight
    hash), a late job recreates no results hash."""
    body = b'{"id":"chatcmpl-1","object":"chat.completion"}'
    await _in_flight(aredis_client, 0, "")  # disowned: the driver declared req-old lost
    await _run(aredis_client, result_commands(_job(0, "req-old"), error=None, payload=body, meta={}))
    assert await aredis_client.hlen(keys.batch_results("batch_x")) == 0
    await _in_flight(aredis_client, 0, "req-new")  # dispatched again
    await _run(aredis_client, result_commands(_job(0, "req-old"), error=None, payload=body, meta={}))
    assert await aredis_client.hlen(keys.batch_results("batch_x")) == 0
    await _run(aredis_client, result_commands(_job(0, "req-new"), error=None, payload=body, meta={}))
    assert list(await aredis_client.hkeys(keys.batch_results("batch_x"))) == [b"0"]
    await aredis_client.delete(keys.batch_inflight("batch_x"), keys.batch_results("batch_x"))  # finalized
    await _run(aredis_client, result_commands(_job(1, "req-late"), error=None, payload=body, meta={}))
    assert not await aredis_client.exists(keys.batch_results("batch_x"))


async def test_an_answered_lines_tokens_count_in_its_batchs_usage_once(aredis_client: aredis.Redis) -> None:
    """The tokens of a line's answer add to its batch's usage with its result, once however often the
    result is sent; a refusal and a disowned job's answer add none."""
    body = b'{"id":"chatcmpl-1","object":"chat.completion"}'
    usage = {
        "prompt_tokens": 7,
        "completion_tokens": 5,
        "total_tokens": 12,
        "prompt_tokens_details": {"cached_tokens": 3},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    for line in range(2):
        await _in_flight(aredis_client, line, "req1")
    answered = result_commands(_job(0), error=None, payload=body, meta={"usage": usage})
    await _run(aredis_client, answered)
    await _run(aredis_client, answered)  # a round trip of unknown fate, sent again
    refused = UpstreamBadRequest("bad")
    await _run(aredis_client, result_commands(_job(1), error=refused, payload=b"", meta={"usage": usage}))
    await _run(
        aredis_client, result_commands(_job(1, "req-old"), error=None, payload=body, meta={"usage": usage})
    )
    counts = await aredis_client.hmget(
        keys.batch_record("batch_x"), "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens"
    )
    assert counts == [b"7", b"3", b"5", b"2"]
