"""/v1/files and /v1/batches carry the ``X-RateLimit-*`` headers of every authenticated answer without
counting against the limit (a caller polls its batches), and refuse a suspended account."""

from __future__ import annotations

import httpx

from ingress.control import accounts
from tests.ingress.conftest import Ingress
from tests.ingress.test_app import assert_error

JSONL = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'


async def _calls(ingress: Ingress) -> list[httpx.Response]:
    """One call of each Files and Batches route, in an order that gives each what it needs."""
    client, headers = ingress.client, {"Authorization": f"Bearer {ingress.api_key}"}
    upload = await client.post(
        "/v1/files", headers=headers, files={"file": ("in.jsonl", JSONL)}, data={"purpose": "batch"}
    )
    file_id = upload.json().get("id", "file-none")
    create = await client.post(
        "/v1/batches",
        headers=headers,
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
    )
    batch_id = create.json().get("id", "batch_none")
    return [
        upload,
        await client.get("/v1/files", headers=headers),
        await client.get(f"/v1/files/{file_id}", headers=headers),
        await client.get(f"/v1/files/{file_id}/content", headers=headers),
        create,
        await client.get("/v1/batches", headers=headers),
        await client.get(f"/v1/batches/{batch_id}", headers=headers),
        await client.post(f"/v1/batches/{batch_id}/cancel", headers=headers),
        await client.delete(f"/v1/files/{file_id}", headers=headers),
    ]


async def test_every_answer_carries_the_rate_limit_without_counting(files_ingress: Ingress) -> None:
    """Each call succeeds with the X-RateLimit-* headers a counted request (GET /v1/models) left, and
    spends none of it: the next counted request finds one less, not ten."""
    headers = {"Authorization": f"Bearer {files_ingress.api_key}"}
    before = await files_ingress.client.get("/v1/models", headers=headers)
    responses = await _calls(files_ingress)
    assert [r.status_code for r in responses] == [200] * len(responses), [r.text for r in responses]
    seen = {(r.headers["x-ratelimit-limit"], r.headers["x-ratelimit-remaining"]) for r in responses}
    assert seen == {(before.headers["x-ratelimit-limit"], before.headers["x-ratelimit-remaining"])}
    after = await files_ingress.client.get("/v1/models", headers=headers)
    assert int(after.headers["x-ratelimit-remaining"]) == int(before.headers["x-ratelimit-remaining"]) - 1


async def test_a_suspended_account_is_refused_by_every_route(files_ingress: Ingress) -> None:
    """401 account_suspended from each Files and Batches route, as from chat completions: a suspended
    account neither uploads, nor starts, lists or reads batches."""
    await accounts.update_account(
        files_ingress.redis, files_ingress.settings, "acct-test", status="suspended"
    )
    for response in await _calls(files_ingress):
        assert_error(response, 401, "authentication_error", "account_suspended")
