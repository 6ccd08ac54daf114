"""10,000 failed requests with 100 KB prompts leave Redis memory within a stated bound.

A real worker process serves a pool whose upstream refuses every connection; the test enqueues jobs
the way the ingress does (:func:`shared.jobs.enqueue_commands`), in waves, and after each wave has
failed compares Redis' ``used_memory`` with what the failed requests may leave: at most
``PER_REQUEST_BOUND`` bytes each (docs/operating.md), for ``failure_ttl``.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
import redis
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.results import Result

from shared.jobs import CompletionJob, enqueue_commands
from shared.redis_commands import replay
from shared.settings import load_settings
from tests.chaos.processes import aiorouter_process
from tests.e2e.running_system import free_port

REQUESTS = 10_000
WAVE = 100  # jobs enqueued at once: ~7.5 MB of compressed prompts in flight at most
PROMPT = secrets.token_urlsafe(75_000)  # 100 KB that compress to ~75 KB, like real text would not
PER_REQUEST_BOUND = 8_192  # bytes of Redis memory a failed request may leave (docs/operating.md)
SLACK = 8 * 1024 * 1024  # Redis' own buffers (the last wave's query buffer, the allocator's rounding)
WAVE_DEADLINE = 60.0  # seconds one wave may take to fail, on a busy shared machine


def _config(tmp_path: Path, redis_url: str) -> Path:
    path = tmp_path / "aiorouter.toml"
    path.write_text(
        f'redis_url = "{redis_url}"\n'
        "[providers.broken]\n"
        'kind = "openai"\n'
        f'base_url = "http://127.0.0.1:{free_port()}/v1"\n'  # nothing listens there: connection refused
        "retries = 0\n"
        "[[models]]\n"
        'id = "chaos/broken"\n'
        'deployments = [{ provider = "broken", upstream_model = "broken" }]\n'
    )
    return path


def _job(number: int) -> CompletionJob:
    return CompletionJob(
        request_id=f"chaos-{number:05d}-{secrets.token_hex(4)}",
        reply_to="aior:reply:chaos-nobody",
        model="chaos/broken",
        provider="broken",
        upstream_model="broken",
        stream=True,
        include_usage=False,
        body={"model": "chaos/broken", "messages": [{"role": "user", "content": PROMPT}]},
        created=int(time.time()),
    )


def _wait_failed(client: redis.Redis, registry: str, count: int) -> None:
    deadline = time.monotonic() + WAVE_DEADLINE
    while client.zcard(registry) < count:
        assert time.monotonic() < deadline, f"only {client.zcard(registry)} of {count} jobs failed in time"
        time.sleep(0.05)


@pytest.mark.timeout(900)
def test_failed_requests_with_large_prompts_leave_bounded_memory(
    clean_redis: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    """10,000 requests of 100 KB each fail at the upstream: Redis keeps at most PER_REQUEST_BOUND bytes
    per request (a diagnostic copy, not the prompt), and each record expires within failure_ttl."""
    config = _config(tmp_path, redis_url)
    settings = load_settings(config, env={})
    registry = FailedJobRegistry("broken", connection=clean_redis).key
    worker = ["worker", "--pool", "broken", "--concurrency", "32"]
    with aiorouter_process(
        worker, config=config, redis_url=redis_url, log=tmp_path / "worker.log"
    ) as process:
        deadline = time.monotonic() + 45
        while not clean_redis.keys("aior:alive:*"):
            assert process.poll() is None and time.monotonic() < deadline, (
                tmp_path / "worker.log"
            ).read_text()
            time.sleep(0.05)
        baseline = int(clean_redis.info("memory")["used_memory"])
        sample = ""
        for start in range(0, REQUESTS, WAVE):
            jobs = [_job(number) for number in range(start, start + WAVE)]
            with clean_redis.pipeline(transaction=False) as pipe:
                for job in jobs:
                    replay(  # a sync pipeline takes the same commands
                        pipe,
                        enqueue_commands(
                            job,
                            job_timeout=settings.job_timeout,
                            result_ttl=settings.result_ttl,
                            failure_ttl=settings.failure_ttl,
                        ),
                    )
                pipe.execute()
            _wait_failed(clean_redis, registry, start + WAVE)
            grown = int(clean_redis.info("memory")["used_memory"]) - baseline
            assert grown <= (start + WAVE) * PER_REQUEST_BOUND + SLACK, (start + WAVE, grown)
            sample = jobs[-1].request_id

    left = clean_redis.memory_usage(Job.key_for(sample), samples=0) or 0
    left += clean_redis.memory_usage(Result.get_key(sample), samples=0) or 0
    assert left <= PER_REQUEST_BOUND
    assert 0 < clean_redis.ttl(Job.key_for(sample)) <= settings.failure_ttl
    assert 0 < clean_redis.ttl(Result.get_key(sample)) <= settings.failure_ttl
    assert clean_redis.zcard(registry) == REQUESTS
