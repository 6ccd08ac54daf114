"""/v1/batches through the in-process app: create, retrieve, list, cancel, per account (no driver runs
here: batches stay as the API leaves them)."""

from __future__ import annotations

import time
from typing import Any

from ingress.batches import records
from tests.ingress.conftest import Ingress

JSONL = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _file(ingress: Ingress, purpose: str = "batch") -> str:
    response = await ingress.client.post(
        "/v1/files",
        headers=_auth(ingress.api_key),
        files={"file": ("input.jsonl", JSONL)},
        data={"purpose": purpose},
    )
    file_id: str = response.json()["id"]
    return file_id


async def _create(ingress: Ingress, key: str | None = None, **body: Any) -> Any:
    payload = {"endpoint": "/v1/chat/completions", "completion_window": "24h", **body}
    return await ingress.client.post("/v1/batches", headers=_auth(key or ingress.api_key), json=payload)


async def test_create_returns_a_validating_batch_object(files_ingress: Ingress) -> None:
    """A new batch is an OpenAI Batch object, validating, with its window's expiry and its metadata."""
    file_id = await _file(files_ingress)
    response = await _create(files_ingress, input_file_id=file_id, metadata={"job": "nightly"})
    assert response.status_code == 200, response.text
    batch = response.json()
    assert batch["id"].startswith("batch_") and batch["object"] == "batch"
    assert (batch["status"], batch["input_file_id"], batch["metadata"]) == (
        "validating",
        file_id,
        {"job": "nightly"},
    )
    assert batch["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert batch["expires_at"] - batch["created_at"] == 86_400
    fetched = await files_ingress.client.get(
        f"/v1/batches/{batch['id']}", headers=_auth(files_ingress.api_key)
    )
    assert fetched.json() == batch


async def test_create_refuses_bad_requests(files_ingress: Ingress, other_key: str) -> None:
    """Unknown or foreign input file, wrong purpose, endpoint or window: 400 naming the parameter."""
    file_id = await _file(files_ingress)
    user_file = await _file(files_ingress, purpose="user_data")
    cases = [
        ({"input_file_id": "file-nope"}, "input_file_id"),
        ({"input_file_id": user_file}, "input_file_id"),
        ({"input_file_id": file_id, "endpoint": "/v1/embeddings"}, "endpoint"),
        ({"input_file_id": file_id, "completion_window": "1h"}, "completion_window"),
    ]
    for body, param in cases:
        response = await _create(files_ingress, **body)
        assert response.status_code == 400 and response.json()["error"]["param"] == param
    foreign = await _create(files_ingress, key=other_key, input_file_id=file_id)
    assert foreign.status_code == 400 and foreign.json()["error"]["param"] == "input_file_id"


async def test_list_and_cancel(files_ingress: Ingress) -> None:
    """Batches list newest first with pagination; cancel moves a validating batch to cancelling."""
    file_id = await _file(files_ingress)
    ids = [(await _create(files_ingress, input_file_id=file_id)).json()["id"] for _ in range(3)]
    headers = _auth(files_ingress.api_key)
    page = (await files_ingress.client.get("/v1/batches?limit=2", headers=headers)).json()
    assert [b["id"] for b in page["data"]] == ids[:0:-1] and page["has_more"] is True
    cancelled = (await files_ingress.client.post(f"/v1/batches/{ids[0]}/cancel", headers=headers)).json()
    assert cancelled["status"] == "cancelling" and cancelled["cancelling_at"] is not None


async def test_another_account_cannot_see_or_cancel(files_ingress: Ingress, other_key: str) -> None:
    """A second account gets 404 for the first's batch and an empty list."""
    batch_id = (await _create(files_ingress, input_file_id=await _file(files_ingress))).json()["id"]
    client = files_ingress.client
    assert (await client.get(f"/v1/batches/{batch_id}", headers=_auth(other_key))).status_code == 404
    assert (await client.post(f"/v1/batches/{batch_id}/cancel", headers=_auth(other_key))).status_code == 404
    assert (await client.get("/v1/batches", headers=_auth(other_key))).json()["data"] == []


async def test_create_refuses_an_oversized_or_non_json_body(files_ingress: Ingress) -> None:
    """A batch-creation body past ``max_body_bytes`` is a 413 (whether or not its length is declared:
    the ingress never holds more than the limit), and one not declared JSON a 400, as for chat."""
    limit = files_ingress.settings.max_body_bytes
    padded = b'{"endpoint": "/v1/chat/completions", "pad": "' + b"a" * limit + b'"}'
    headers = {**_auth(files_ingress.api_key), "Content-Type": "application/json"}
    declared = await files_ingress.client.post("/v1/batches", headers=headers, content=padded)
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "payload_too_large"

    async def undeclared_chunks() -> Any:
        for start in range(0, len(padded), 65_536):
            yield padded[start : start + 65_536]

    streamed = await files_ingress.client.post("/v1/batches", headers=headers, content=undeclared_chunks())
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "payload_too_large"
    text = {**_auth(files_ingress.api_key), "Content-Type": "text/plain"}
    plain = await files_ingress.client.post("/v1/batches", headers=text, content=b"{}")
    assert plain.status_code == 400 and plain.json()["error"]["code"] == "unsupported_content_type"


async def test_list_limit_is_ascii_digits_only(files_ingress: Ingress) -> None:
    """A limit with a sign, a digit separator or another script's digits is a 400, as on the admin API."""
    headers = _auth(files_ingress.api_key)
    for limit in ("+5", "1_0", "\u0665", " 5", "99999999999999999999"):
        response = await files_ingress.client.get("/v1/batches", params={"limit": limit}, headers=headers)
        assert response.status_code == 400 and response.json()["error"]["param"] == "limit", limit


async def test_an_account_s_batch_index_forgets_what_expired(files_ingress: Ingress) -> None:
    """The account's batch index does not grow forever: an entry older than its record can live (a batch
    created past ACCOUNT_BATCHES_KEPT ago) goes when the account creates its next batch."""
    from shared import keys

    index = keys.account_batches("acct-test")  # the account of files_ingress.api_key
    ancient_us = (time.time() - keys.ACCOUNT_BATCHES_KEPT - 86_400) * 1_000_000
    await files_ingress.redis.zadd(index, {"batch_ancient": ancient_us})
    created = await _create(files_ingress, input_file_id=await _file(files_ingress))
    members = {m.decode() for m in await files_ingress.redis.zrange(index, 0, -1)}
    assert members == {created.json()["id"]}


async def test_output_expires_after_is_kept_for_the_result_files(files_ingress: Ingress) -> None:
    """A valid output_expires_after is recorded for the finalizer (the Batch object is unchanged); one out
    of OpenAI's bounds, or not an object, is a 400 naming the field, and no batch is made."""
    file_id = await _file(files_ingress)
    policy = {"anchor": "created_at", "seconds": 3600}
    response = await _create(files_ingress, input_file_id=file_id, output_expires_after=policy)
    assert response.status_code == 200, response.text
    record = await records.load_batch(files_ingress.redis, response.json()["id"])
    assert record is not None and record.number("output_expires_after") == 3600
    for bad, param in (
        ({"anchor": "created_at", "seconds": 5}, "output_expires_after.seconds"),
        ({"anchor": "created_at", "seconds": True}, "output_expires_after.seconds"),
        ({"anchor": "now", "seconds": 3600}, "output_expires_after.anchor"),
        ("3600", "output_expires_after"),
    ):
        refused = await _create(files_ingress, input_file_id=file_id, output_expires_after=bad)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == param, refused.text
    listed = await files_ingress.client.get("/v1/batches", headers=_auth(files_ingress.api_key))
    assert len(listed.json()["data"]) == 1
