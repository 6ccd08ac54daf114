"""The Batch API end to end through the official OpenAI SDK: the real ingress, workers and batch driver
as processes on a real Redis, files in a local directory."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import orjson
import pytest
from openai import OpenAI

from tests.e2e.running_system import RunningSystem, SystemLauncher, free_port

CONFIG = """
worker_heartbeat_interval = 0.5
worker_dead_after = 2.0
key_cache_ttl = 1.0

[batches]
storage_dir = "{files}"
poll_interval = 0.05
lines_in_flight = 32

[providers.simulated]
kind = "simulated"

[[models]]
id = "aiorouter/echo"
deployments = [{{ provider = "simulated", upstream_model = "echo" }}]

[providers.slow]
kind = "simulated"
tokens_per_second = 20.0

[providers.down]   # nothing listens there: every call fails before any content, so the line runs again
kind = "openai"
base_url = "http://127.0.0.1:{closed_port}/v1"
api_key = "sk-none"
retries = 0

[[models]]
id = "e2e/fallback"
deployments = [
    {{ provider = "down", upstream_model = "echo" }},
    {{ provider = "simulated", upstream_model = "echo" }},
]

[[models]]
id = "e2e/slow"
deployments = [{{ provider = "slow", upstream_model = "lorem" }}]
"""

FINISH_WITHIN = 60.0  # seconds a small batch may take on a box shared by several test runs
FINAL = ("completed", "failed", "expired", "cancelled")


def batch_file(count: int, model: str = "aiorouter/echo", max_tokens: int = 8) -> bytes:
    """A JSONL input of ``count`` chat lines, custom ids ``req-0``..."""
    lines = [
        {
            "custom_id": f"req-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "messages": [{"role": "user", "content": f"line {n}"}],
                "max_tokens": max_tokens,
            },
        }
        for n in range(count)
    ]
    return b"\n".join(orjson.dumps(line) for line in lines) + b"\n"


def wait_final(client: OpenAI, batch_id: str, within: float = FINISH_WITHIN) -> openai.types.Batch:
    """Poll the batch as a caller would until it reaches a final status."""
    deadline = time.monotonic() + within
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in FINAL or time.monotonic() > deadline:
            return batch
        time.sleep(0.2)


def jsonl(client: OpenAI, file_id: str | None) -> list[dict[str, object]]:
    if file_id is None:
        return []
    return [orjson.loads(line) for line in client.files.content(file_id).content.splitlines() if line]


@pytest.fixture(scope="module")
def system(
    launch_system: SystemLauncher, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSystem]:
    files = tmp_path_factory.mktemp("files")
    config = CONFIG.format(files=files, closed_port=free_port())
    yield launch_system(config, pools=["simulated", "slow", "down"], batch_driver=True)


def test_a_batch_runs_and_every_line_comes_back_once(system: RunningSystem, tmp_path: Path) -> None:
    """Upload, create, poll to completed, download: one output line per custom_id, each a chat completion."""
    client = system.client()
    uploaded = client.files.create(file=("input.jsonl", batch_file(50)), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes > 0
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"k": "v"},
    )
    assert batch.status == "validating"
    done = wait_final(client, batch.id)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (
        50,
        50,
        0,
    )
    assert done.error_file_id is None and done.output_file_id is not None
    assert done.in_progress_at and done.finalizing_at and done.completed_at and done.metadata == {"k": "v"}
    lines = jsonl(client, done.output_file_id)
    assert sorted(str(line["custom_id"]) for line in lines) == sorted(f"req-{n}" for n in range(50))
    for line in lines:
        response = line["response"]
        assert isinstance(response, dict) and response["status_code"] == 200 and line["error"] is None
        assert response["body"]["object"] == "chat.completion"
        assert response["body"]["choices"][0]["message"]["role"] == "assistant"
    output = client.files.retrieve(done.output_file_id)
    assert output.purpose == "batch_output"
    usages = [line["response"]["body"]["usage"] for line in lines]  # type: ignore[index]
    assert done.usage is not None
    assert (done.usage.input_tokens, done.usage.output_tokens, done.usage.total_tokens) == (
        sum(u["prompt_tokens"] for u in usages),
        sum(u["completion_tokens"] for u in usages),
        sum(u["total_tokens"] for u in usages),
    )
    assert done.usage.input_tokens_details.cached_tokens == 0
    assert done.usage.output_tokens_details.reasoning_tokens == 0
    assert done.id in [b.id for b in client.batches.list(limit=5).data]


def test_a_bad_file_fails_the_batch_naming_its_lines(system: RunningSystem) -> None:
    """Bad JSON, a duplicate custom_id, a wrong url, an unknown model, a bad body: failed, errors name
    each line, nothing runs."""
    client = system.client()
    good = batch_file(2).splitlines()
    bad_lines = [
        good[0],
        b"{not json",
        good[0],  # the same custom_id again
        good[1].replace(b"/v1/chat/completions", b"/v1/embeddings"),
        good[1].replace(b"aiorouter/echo", b"no/such-model"),
        orjson.dumps(
            {
                "custom_id": "t",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "aiorouter/echo", "messages": [], "temperature": 9},
            }
        ),
    ]
    uploaded = client.files.create(file=("bad.jsonl", b"\n".join(bad_lines)), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_final(client, batch.id)
    assert done.status == "failed" and done.failed_at is not None
    assert done.errors is not None and done.errors.data is not None
    found = {(e.line, e.code) for e in done.errors.data}
    assert {
        (2, "invalid_json_line"),
        (3, "duplicate_custom_id"),
        (4, "invalid_url"),
        (5, "model_not_found"),
    } <= found
    assert any(e.line == 6 and e.param and e.param.startswith("body.") for e in done.errors.data)
    assert (
        done.output_file_id is None and done.request_counts is not None and done.request_counts.completed == 0
    )


def test_a_line_whose_provider_preferences_no_deployment_meets_fails_validation(
    system: RunningSystem,
) -> None:
    """A line that may only run on a provider its model has not fails its batch at validation, naming
    the line, and the batch created after it still runs (the driver's rounds go on)."""
    client = system.client()
    line = orjson.loads(batch_file(1).splitlines()[0])
    line["body"]["provider"] = {"order": ["slow"], "allow_fallbacks": False}
    uploaded = client.files.create(file=("pinned.jsonl", orjson.dumps(line)), purpose="batch")
    pinned = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    uploaded = client.files.create(file=("after.jsonl", batch_file(2)), purpose="batch")
    after = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert wait_final(client, after.id).status == "completed"
    done = wait_final(client, pinned.id)
    assert done.status == "failed" and done.errors is not None and done.errors.data is not None
    assert [(e.line, e.code, e.param) for e in done.errors.data] == [
        (1, "invalid_value", "body.provider.order")
    ]


def test_cancel_stops_the_batch_with_partial_results(system: RunningSystem) -> None:
    """A cancelled batch ends cancelled; every custom_id is once in the output or the error file."""
    client = system.client()
    uploaded = client.files.create(
        file=("slow.jsonl", batch_file(200, model="e2e/slow", max_tokens=20)), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + FINISH_WITHIN
    while client.batches.retrieve(batch.id).status == "validating" and time.monotonic() < deadline:
        time.sleep(0.1)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    done = wait_final(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at is not None
    outputs, errors = jsonl(client, done.output_file_id), jsonl(client, done.error_file_id)
    ids = [str(line["custom_id"]) for line in outputs + errors]
    assert sorted(ids) == sorted(f"req-{n}" for n in range(200))
    assert any(isinstance(e["error"], dict) and e["error"]["code"] == "batch_cancelled" for e in errors)
    assert done.request_counts is not None and done.request_counts.completed == len(outputs)
    assert done.request_counts.failed == len(errors) and len(errors) > 0


def test_another_account_sees_nothing(system: RunningSystem) -> None:
    """A second account's key gets 404 for the first account's file and batch, and empty lists."""
    import asyncio

    import redis.asyncio as aredis

    from cli.key_issuing import issue_key
    from shared.settings import load_settings

    async def other_key() -> str:
        client = aredis.Redis.from_url(system.redis_url)
        try:
            issued = await issue_key(
                client,
                load_settings(system.config, env={}),
                account_id="e2e-other",
                plan="developer",
                name="other",
            )
            return issued.secret
        finally:
            await client.aclose()

    mine = system.client()
    uploaded = mine.files.create(file=("input.jsonl", batch_file(1)), purpose="batch")
    batch = mine.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    theirs = system.client(api_key=asyncio.run(other_key()))
    with pytest.raises(openai.NotFoundError):
        theirs.files.retrieve(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        theirs.files.content(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        theirs.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        theirs.batches.cancel(batch.id)
    assert theirs.files.list().data == [] and theirs.batches.list().data == []
    wait_final(mine, batch.id)


def test_a_line_whose_deployment_is_down_runs_again_on_the_next(system: RunningSystem) -> None:
    """A line routed first to a deployment nobody answers runs again on the model's next deployment, as
    an interactive request falls back, even while that deployment's breaker is still closed."""
    client = system.client()
    uploaded = client.files.create(
        file=("fallback.jsonl", batch_file(1, model="e2e/fallback")), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_final(client, batch.id)
    assert done.status == "completed" and done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 0)


def test_a_line_pinned_to_a_provider_runs_again_only_there(system: RunningSystem) -> None:
    """A line whose ``provider`` preferences forbid fallbacks runs again on its one provider when that
    provider fails it, never on another deployment of its model: it ends in the error file as
    ``line_failed`` once its attempts are spent."""
    client = system.client()
    line = orjson.loads(batch_file(1, model="e2e/fallback").splitlines()[0])
    line["body"]["provider"] = {"order": ["down"], "allow_fallbacks": False}
    uploaded = client.files.create(file=("pinned.jsonl", orjson.dumps(line)), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_final(client, batch.id)
    assert done.status == "completed" and done.output_file_id is None, done
    (error,) = jsonl(client, done.error_file_id)
    assert error["custom_id"] == "req-0" and error["response"] is None
    assert isinstance(error["error"], dict) and error["error"]["code"] == "line_failed"


def test_the_batch_driver_runs_at_a_lower_cpu_priority_than_the_interactive_processes(
    system: RunningSystem,
) -> None:
    """The driver adds `driver_nice` (10) to its niceness at start; the ingress and workers keep theirs, so
    on a shared machine the kernel gives interactive work the CPU first."""
    by_label = {service.label: service.process.pid for service in system.services}
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, by_label["batch driver"]) == min(19, own + 10)
    assert os.getpriority(os.PRIO_PROCESS, by_label["ingress"]) == own
    assert os.getpriority(os.PRIO_PROCESS, by_label["worker simulated #1"]) == own


def test_files_and_batch_results_expire_as_the_sdk_asks(system: RunningSystem) -> None:
    """The SDK's expires_after sets an upload's expires_at, output_expires_after that of a batch's output
    file, and a policy out of OpenAI's bounds is a BadRequestError."""
    client = system.client()
    hour = {"anchor": "created_at", "seconds": 3600}
    uploaded = client.files.create(file=("input.jsonl", batch_file(2)), purpose="batch", expires_after=hour)
    assert uploaded.expires_at is not None and uploaded.expires_at - uploaded.created_at == 3600
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(
            file=("a.jsonl", b"{}"), purpose="user_data", expires_after={"anchor": "created_at", "seconds": 5}
        )
    assert refused.value.body["param"] == "expires_after.seconds"  # type: ignore[index]
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        output_expires_after={"anchor": "created_at", "seconds": 7200},
    )
    done = wait_final(client, batch.id)
    assert done.status == "completed" and done.output_file_id is not None, done
    output = client.files.retrieve(done.output_file_id)
    assert output.expires_at is not None and output.expires_at - output.created_at == 7200
