"""Redis killed and restarted (its data kept) while streams run: the holds and cancels the ingress could
not do during the outage are done as soon as Redis is back, not when the sweep reaches the holds."""

from __future__ import annotations

import time

import pytest

from tests.chaos.configs import slow_model_config
from tests.chaos.conftest import PrivateRedis, add_credit, balance, wait_until
from tests.chaos.streams import StreamReader
from tests.e2e.running_system import SystemLauncher

CONFIG = slow_model_config(
    """
worker_heartbeat_interval = 0.5
worker_dead_after = 30.0
"""
)
STREAMS = 3
DOWN_FOR = 2.0
# From the restart: reconnecting, one retry of the deferred clean-ups, slack for a shared box.  Without
# them the holds would wait for their jobs' end (60 s answers) or the sweep (queue waits + lease: 80 s).
CLEANED_WITHIN = 12.0


@pytest.mark.persistent_redis
def test_holds_and_cancels_held_up_by_a_redis_outage_are_done_once_it_is_back(
    launch_chaos_system: SystemLauncher, private_redis: PrivateRedis
) -> None:
    """Redis killed under three 60 s streams: each client gets an error; once Redis is back the credit
    held for them is released and their jobs are cancelled within seconds."""
    system = launch_chaos_system(CONFIG, pools=["slow"])
    add_credit(private_redis, "e2e", 100)
    body = {"model": "chaos/slow", "messages": [{"role": "user", "content": "go"}], "max_tokens": 600}
    readers = [StreamReader(system, body).start() for _ in range(STREAMS)]
    for reader in readers:
        assert reader.record.first_content.wait(20), "a stream never started"
    private_redis.kill()
    for reader in readers:
        assert reader.join(15), f"a stream outlived the loss of Redis: {reader.record}"
        assert reader.record.ending.startswith("error:"), reader.record
    time.sleep(DOWN_FOR)
    private_redis.start()
    restarted_at = time.monotonic()
    assert wait_until(lambda: balance(private_redis, "e2e").reserved == 0, within=CLEANED_WITHIN), balance(
        private_redis, "e2e"
    )
    assert wait_until(
        lambda: not system.started_jobs("slow"), within=CLEANED_WITHIN - (time.monotonic() - restarted_at)
    )
    assert balance(private_redis, "e2e").spent == 0  # nobody got an answer: nobody is charged


ANSWER_TOKENS = 30  # 3 s per answer at 10 tokens/s: they end while Redis is down or just after


@pytest.mark.persistent_redis
def test_answers_that_end_across_a_redis_outage_are_not_charged(
    launch_chaos_system: SystemLauncher, private_redis: PrivateRedis
) -> None:
    """Redis killed under JSON requests whose answers end around its return: each client got its error
    when Redis went, and the workers' final frames, retried until Redis answers, charge nobody (the
    ingress releases the holds before its reply channel is subscribed again, and an answer is charged
    only while its channel is)."""
    import threading

    import httpx

    system = launch_chaos_system(CONFIG, pools=["slow"])
    add_credit(private_redis, "e2e", 100)
    body = {
        "model": "chaos/slow",
        "messages": [{"role": "user", "content": "go"}],
        "max_tokens": ANSWER_TOKENS,
    }
    statuses: list[int] = []

    def call() -> None:
        with httpx.Client(timeout=60) as client:
            response = client.post(
                f"{system.base_url}/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {system.api_key}"},
            )
            statuses.append(response.status_code)

    callers = [threading.Thread(target=call, daemon=True) for _ in range(STREAMS)]
    for caller in callers:
        caller.start()
    assert wait_until(lambda: len(system.started_jobs("slow")) == STREAMS, within=20)
    private_redis.kill()
    for caller in callers:
        caller.join(15)
    assert statuses == [503] * STREAMS, statuses
    time.sleep(DOWN_FOR)
    private_redis.start()
    assert wait_until(lambda: balance(private_redis, "e2e").reserved == 0, within=CLEANED_WITHIN), balance(
        private_redis, "e2e"
    )
    # A job leaves rq's started registry in the write that follows its final frame: its charge is done.
    assert wait_until(lambda: not system.started_jobs("slow"), within=CLEANED_WITHIN)
    assert balance(private_redis, "e2e").spent == 0, balance(private_redis, "e2e")
