"""A batch survives kill -9 of a worker and of the batch driver mid-way: once both are restarted it
completes with every custom_id exactly once across its output and error files."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.e2e.running_system import Service, SystemLauncher, _start
from tests.e2e.test_batches import batch_file, jsonl, wait_final

CONFIG = """
worker_heartbeat_interval = 0.3
worker_dead_after = 1.5
key_cache_ttl = 1.0

[batches]
storage_dir = "{files}"
poll_interval = 0.05
lines_in_flight = 64
driver_lease = 1.5

[providers.simulated]
kind = "simulated"
tokens_per_second = 200.0

[[models]]
id = "aiorouter/echo"
deployments = [{{ provider = "simulated", upstream_model = "echo" }}]
"""

LINES = 2000
PROGRESS_WITHIN = 90.0


def _kill(service: Service) -> None:
    service.process.send_signal(signal.SIGKILL)
    service.process.wait()


def test_kill_a_worker_and_the_driver_mid_batch(launch_fresh_system: SystemLauncher, tmp_path: Path) -> None:
    """2,000 lines; SIGKILL one worker and the driver once a few hundred are done; restart both: the
    batch completes with 2,000 distinct custom_ids, none twice."""
    files = tmp_path / "files"
    system = launch_fresh_system(
        CONFIG.format(files=files), pools=["simulated"], workers_per_pool=2, batch_driver=True
    )
    client = system.client()
    uploaded = client.files.create(file=("crash.jsonl", batch_file(LINES, max_tokens=4)), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + PROGRESS_WITHIN
    while time.monotonic() < deadline:
        current = client.batches.retrieve(batch.id)
        counts = current.request_counts
        if counts is not None and counts.completed >= 300:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"the batch made no progress: {current}")
    worker = system.workers("simulated")[0]
    (driver,) = [s for s in system.services if s.label == "batch driver"]
    _kill(worker)
    _kill(driver)
    assert client.batches.retrieve(batch.id).status == "in_progress"
    workdir = system.config.parent
    system.services.append(_start("batch driver #2", ["batches"], system.env, workdir))
    argv = ["worker", "--pool", "simulated", "--concurrency", "16"]
    system.services.append(_start("worker simulated #3", argv, system.env, workdir))
    done = wait_final(client, batch.id, within=PROGRESS_WITHIN)
    assert done.status == "completed", done
    outputs, errors = jsonl(client, done.output_file_id), jsonl(client, done.error_file_id)
    ids = [str(line["custom_id"]) for line in outputs + errors]
    assert len(ids) == LINES
    assert set(ids) == {f"req-{n}" for n in range(LINES)}
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (len(outputs), len(errors))


def test_a_batch_whose_input_file_is_deleted_mid_run_completes_across_a_driver_restart(
    launch_fresh_system: SystemLauncher, tmp_path: Path
) -> None:
    """Deleting the input file of a running batch answers 200 and the file is gone for the caller at
    once, but the batch keeps reading it: with the driver killed and restarted (it opens the input
    again), the batch completes with every custom_id once; then the content is deleted."""
    files = tmp_path / "files"
    system = launch_fresh_system(CONFIG.format(files=files), pools=["simulated"], batch_driver=True)
    client = system.client()
    lines = 600  # at 200 tokens/s and 64 lines in flight, several seconds of work
    uploaded = client.files.create(file=("input.jsonl", batch_file(lines, max_tokens=20)), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + PROGRESS_WITHIN
    while client.batches.retrieve(batch.id).status == "validating" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.files.delete(uploaded.id).deleted
    # the delete met the batch running (else it proves nothing): the content is still there for it
    assert client.batches.retrieve(batch.id).status == "in_progress"
    assert (files / "files" / uploaded.id).exists()
    (driver,) = [s for s in system.services if s.label == "batch driver"]
    _kill(driver)
    system.services.append(_start("batch driver #2", ["batches"], system.env, system.config.parent))
    done = wait_final(client, batch.id, within=PROGRESS_WITHIN)
    assert done.status == "completed", done
    outputs, errors = jsonl(client, done.output_file_id), jsonl(client, done.error_file_id)
    assert sorted(str(line["custom_id"]) for line in outputs + errors) == sorted(
        f"req-{n}" for n in range(lines)
    )
    assert not (files / "files" / uploaded.id).exists()
    assert "batch driver round failed" not in system.logs()
