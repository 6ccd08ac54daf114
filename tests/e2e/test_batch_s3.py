"""The Batch API with its files in an S3-compatible store (moto's standalone server on a socket): the
ingress and the batch driver share the bucket, as separate hosts would."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.e2e.running_system import SystemLauncher, free_port
from tests.e2e.test_batches import batch_file, jsonl, wait_final

BUCKET = "aiorouter-e2e"
CONFIG = """
worker_heartbeat_interval = 0.5
worker_dead_after = 2.0

[batches]
storage = "s3"
s3_bucket = "{bucket}"
s3_endpoint_url = "{endpoint}"
s3_region = "us-east-1"
poll_interval = 0.05

[providers.simulated]
kind = "simulated"

[[models]]
id = "aiorouter/echo"
deployments = [{{ provider = "simulated", upstream_model = "echo" }}]
"""


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 server with one bucket; the credentials in the environment the processes inherit."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    client.close()
    yield endpoint
    server.stop()


def test_a_batch_runs_with_its_files_in_s3(launch_fresh_system: SystemLauncher, s3_endpoint: str) -> None:
    """Upload, run and download a batch with every file in the bucket: the objects are really there."""
    config = CONFIG.format(bucket=BUCKET, endpoint=s3_endpoint)
    system = launch_fresh_system(config, pools=["simulated"], batch_driver=True)
    client = system.client()
    uploaded = client.files.create(file=("input.jsonl", batch_file(20)), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_final(client, batch.id)
    assert done.status == "completed" and done.output_file_id is not None
    assert sorted(str(line["custom_id"]) for line in jsonl(client, done.output_file_id)) == sorted(
        f"req-{n}" for n in range(20)
    )
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    stored = {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    s3.close()
    assert {f"aiorouter/files/{uploaded.id}", f"aiorouter/files/{done.output_file_id}"} <= stored
