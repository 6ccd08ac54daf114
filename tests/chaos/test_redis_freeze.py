"""Redis frozen for 12 s (SIGSTOP, then SIGCONT: what a failover looks like) while slow streams run:
every stream still ends, with its answer or an error event, within a bound, and no credit stays held."""

from __future__ import annotations

import time

from tests.chaos.conftest import PrivateRedis, add_credit, balance, wait_until
from tests.chaos.streams import StreamReader
from tests.e2e.running_system import SystemLauncher

STALL_TIMEOUT = 8.0
CONFIG = f"""
worker_heartbeat_interval = 0.5
worker_dead_after = 30.0          # the freeze must not make the worker look dead: the stream is what hangs
stream_ping_interval = 1.0
stream_stall_timeout = {STALL_TIMEOUT}

[providers.slow]
kind = "simulated"
tokens_per_second = 8.0
retries = 0

[providers.slow.timeouts]
connect = 1.0
first_token = 2.0
idle = 2.0

[[models]]
id = "chaos/slow"
input_price_per_m = 1.0
output_price_per_m = 2.0
deployments = [{{ provider = "slow", upstream_model = "lorem" }}]
"""
STREAMS = 4
FREEZE = 12.0
# From the thaw: the stall timeout, the rest of a 15 s stream, and slack for a shared two-core box.
ENDED_WITHIN = STALL_TIMEOUT + 15.0 + 7.0
RELEASED_WITHIN = 10.0


def test_streams_running_through_a_redis_freeze_all_end_and_release_their_holds(
    launch_chaos_system: SystemLauncher, private_redis: PrivateRedis
) -> None:
    """Four 15 s streams, Redis frozen 12 s mid-stream: each ends ([DONE] or an error event) within the
    bound after the thaw, and the account's held credit returns to 0."""
    system = launch_chaos_system(CONFIG, pools=["slow"])
    add_credit(private_redis, "e2e", 100)
    body = {"model": "chaos/slow", "messages": [{"role": "user", "content": "go"}], "max_tokens": 120}
    readers = [StreamReader(system, body).start() for _ in range(STREAMS)]
    for reader in readers:
        assert reader.record.first_content.wait(20), "a stream never started"
    private_redis.freeze()
    try:
        time.sleep(FREEZE)
    finally:
        private_redis.thaw()
    thawed_at = time.monotonic()
    for reader in readers:
        assert reader.join(max(0.1, thawed_at + ENDED_WITHIN - time.monotonic())), (
            f"a stream was still open {ENDED_WITHIN:.0f} s after the thaw: {reader.record}"
        )
    endings = [reader.record.ending for reader in readers]
    assert all(ending == "done" or ending.startswith("error:") for ending in endings), endings
    assert wait_until(lambda: balance(private_redis, "e2e").reserved == 0, within=RELEASED_WITHIN), balance(
        private_redis, "e2e"
    )
