"""A batch whose completion window passes ends expired: lines that ran are in the output file, the rest
are batch_expired errors, every custom_id once."""

from __future__ import annotations

from pathlib import Path

from openai import OpenAI
from openai.types import Batch

from tests.e2e.running_system import SystemLauncher
from tests.e2e.test_batches import batch_file, jsonl, wait_final

CONFIG = """
worker_heartbeat_interval = 0.5
worker_dead_after = 2.0

[batches]
storage_dir = "{files}"
poll_interval = 0.05
lines_in_flight = 2
completion_window = 3

[providers.slow]
kind = "simulated"
tokens_per_second = 20.0

[[models]]
id = "e2e/slow"
deployments = [{{ provider = "slow", upstream_model = "lorem" }}]
"""


def run_batch(
    launcher: SystemLauncher, tmp_path: Path, *, lines: int, max_tokens: int
) -> tuple[OpenAI, Batch]:
    """A batch of ``lines`` lines of ``max_tokens`` tokens (20 a second) in a 3-second window, run to its
    end; the client and the batch as it ended."""
    system = launcher(CONFIG.format(files=tmp_path / "files"), pools=["slow"], batch_driver=True)
    client = system.client()
    uploaded = client.files.create(
        file=("in.jsonl", batch_file(lines, model="e2e/slow", max_tokens=max_tokens)), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    return client, wait_final(client, batch.id)


def test_lines_not_run_in_the_window_expire(launch_fresh_system: SystemLauncher, tmp_path: Path) -> None:
    """40 one-second lines, two at a time, in a 3-second window: expired, with batch_expired errors."""
    client, done = run_batch(launch_fresh_system, tmp_path, lines=40, max_tokens=20)
    assert done.status == "expired" and done.expired_at is not None
    outputs, errors = jsonl(client, done.output_file_id), jsonl(client, done.error_file_id)
    assert sorted(str(line["custom_id"]) for line in outputs + errors) == sorted(
        f"req-{n}" for n in range(40)
    )
    assert errors and all(e["error"]["code"] == "batch_expired" for e in errors)  # type: ignore[index]


def test_lines_all_running_when_the_window_passes_complete_the_batch(
    launch_fresh_system: SystemLauncher, tmp_path: Path
) -> None:
    """Two four-second lines, both dispatched at once, in a 3-second window: the window passes while
    they run, none is failed by it, so the batch ends completed with both answers."""
    client, done = run_batch(launch_fresh_system, tmp_path, lines=2, max_tokens=80)
    assert done.status == "completed" and done.error_file_id is None
    assert done.request_counts is not None and done.request_counts.completed == 2
    assert sorted(str(line["custom_id"]) for line in jsonl(client, done.output_file_id)) == ["req-0", "req-1"]
