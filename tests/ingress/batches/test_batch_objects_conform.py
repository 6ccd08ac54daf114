"""The File and Batch objects, their lists and the delete reply validate against OpenAI's spec."""

from __future__ import annotations

from typing import Any

import httpx

from tests.ingress.conftest import Ingress
from tests.openai_spec import violations

SPEC = "batches_and_files.json"
JSONL = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'


def _auth(ingress: Ingress) -> dict[str, str]:
    return {"Authorization": f"Bearer {ingress.api_key}"}


def _valid(schema: str, response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert violations(SPEC, schema, body) == []
    return body


async def test_file_and_batch_replies_conform(files_ingress: Ingress) -> None:
    """Every reply of the Files and Batches API matches its schema in OpenAI's spec."""
    client, headers = files_ingress.client, _auth(files_ingress)
    uploaded = await client.post(
        "/v1/files", headers=headers, files={"file": ("in.jsonl", JSONL)}, data={"purpose": "batch"}
    )
    file_id = _valid("OpenAIFile", uploaded)["id"]
    _valid("OpenAIFile", await client.get(f"/v1/files/{file_id}", headers=headers))
    _valid("ListFilesResponse", await client.get("/v1/files", headers=headers))
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    batch_id = _valid("Batch", await client.post("/v1/batches", headers=headers, json=body))["id"]
    _valid("Batch", await client.get(f"/v1/batches/{batch_id}", headers=headers))
    _valid("ListBatchesResponse", await client.get("/v1/batches", headers=headers))
    _valid("Batch", await client.post(f"/v1/batches/{batch_id}/cancel", headers=headers))
    _valid("DeleteFileResponse", await client.delete(f"/v1/files/{file_id}", headers=headers))
