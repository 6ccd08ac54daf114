"""/v1/files through the in-process app: upload, list, retrieve, download, delete, per account."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from shared import keys
from tests.ingress.conftest import Ingress, IngressFactory

JSONL = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _upload(ingress: Ingress, data: bytes = JSONL, purpose: str = "batch") -> httpx.Response:
    return await ingress.client.post(
        "/v1/files",
        headers=_auth(ingress.api_key),
        files={"file": ("input.jsonl", data, "application/jsonl")},
        data={"purpose": purpose},
    )


def _policy(anchor: str, seconds: str) -> dict[str, str]:
    """An expires_after policy as the OpenAI SDKs send it in a multipart form."""
    return {"expires_after[anchor]": anchor, "expires_after[seconds]": seconds}


async def test_upload_returns_a_file_object_and_the_content_reads_back(files_ingress: Ingress) -> None:
    """An uploaded file is an OpenAI File object, and its content downloads byte for byte."""
    response = await _upload(files_ingress)
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["id"].startswith("file-") and created["object"] == "file"
    assert (created["bytes"], created["filename"], created["purpose"]) == (len(JSONL), "input.jsonl", "batch")
    assert created["expires_at"] - created["created_at"] == files_ingress.settings.batches.file_ttl
    content = await files_ingress.client.get(
        f"/v1/files/{created['id']}/content", headers=_auth(files_ingress.api_key)
    )
    assert content.content == JSONL
    fetched = await files_ingress.client.get(
        f"/v1/files/{created['id']}", headers=_auth(files_ingress.api_key)
    )
    assert fetched.json() == created


async def test_list_pages_newest_first_and_filters_by_purpose(files_ingress: Ingress) -> None:
    """Listing pages with after/limit and keeps only the purpose asked for."""
    ids = [(await _upload(files_ingress)).json()["id"] for _ in range(3)]
    other = (await _upload(files_ingress, purpose="user_data")).json()["id"]
    headers = _auth(files_ingress.api_key)
    first = (await files_ingress.client.get("/v1/files?purpose=batch&limit=2", headers=headers)).json()
    assert first["has_more"] is True and len(first["data"]) == 2
    rest = (
        await files_ingress.client.get(
            f"/v1/files?purpose=batch&limit=2&after={first['last_id']}", headers=headers
        )
    ).json()
    listed = [f["id"] for f in first["data"] + rest["data"]]
    assert sorted(listed) == sorted(ids) and other not in listed and rest["has_more"] is False


async def test_another_account_gets_404(files_ingress: Ingress, other_key: str) -> None:
    """A second account can neither see, download, list nor delete the first account's file."""
    file_id = (await _upload(files_ingress)).json()["id"]
    client = files_ingress.client
    for method, path in (("GET", ""), ("GET", "/content"), ("DELETE", "")):
        response = await client.request(method, f"/v1/files/{file_id}{path}", headers=_auth(other_key))
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "invalid_request"
    assert (await client.get("/v1/files", headers=_auth(other_key))).json()["data"] == []


async def test_delete_removes_the_file(files_ingress: Ingress) -> None:
    """A deleted file answers 404 afterwards."""
    file_id = (await _upload(files_ingress)).json()["id"]
    headers = _auth(files_ingress.api_key)
    deleted = await files_ingress.client.delete(f"/v1/files/{file_id}", headers=headers)
    assert deleted.json() == {"id": file_id, "object": "file", "deleted": True}
    assert (
        await files_ingress.client.get(f"/v1/files/{file_id}/content", headers=headers)
    ).status_code == 404


async def test_a_file_over_the_size_cap_is_413(files_ingress: Ingress) -> None:
    """A file larger than batches.max_file_bytes is refused with 413, in the OpenAI error envelope."""
    response = await _upload(files_ingress, data=b"x" * 100_000)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_upload_needs_a_key_a_file_and_a_purpose(files_ingress: Ingress) -> None:
    """No key is 401; a missing file or an unknown purpose is 400."""
    no_key = await files_ingress.client.post(
        "/v1/files", files={"file": ("a", b"x")}, data={"purpose": "batch"}
    )
    assert no_key.status_code == 401
    bad_purpose = await _upload(files_ingress, purpose="nonsense")
    assert bad_purpose.status_code == 400 and bad_purpose.json()["error"]["param"] == "purpose"
    no_file = await files_ingress.client.post(
        "/v1/files", headers=_auth(files_ingress.api_key), data={"purpose": "batch"}
    )
    assert no_file.status_code == 400


async def test_an_account_holds_a_bounded_number_of_files(files_ingress: Ingress, other_key: str) -> None:
    """Past max_files_per_account an upload is a 400 too_many_files (storage is not unbounded per
    account); deleting one makes room, and another account is not affected."""
    limit = files_ingress.settings.batches.max_files_per_account
    ids = [(await _upload(files_ingress)).json()["id"] for _ in range(limit)]
    refused = await _upload(files_ingress)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "too_many_files"
    headers = _auth(files_ingress.api_key)
    assert (await files_ingress.client.delete(f"/v1/files/{ids[0]}", headers=headers)).status_code == 200
    assert (await _upload(files_ingress)).status_code == 200
    other = await files_ingress.client.post(
        "/v1/files", files={"file": ("b.jsonl", JSONL)}, data={"purpose": "batch"}, headers=_auth(other_key)
    )
    assert other.status_code == 200


async def test_a_malformed_multipart_form_reads_as_one_sentence(files_ingress: Ingress) -> None:
    """A form without a boundary is a 400 whose message is one sentence: no status prefix, no '..'."""
    response = await files_ingress.client.post(
        "/v1/files",
        content=b"--x\r\n",
        headers={**_auth(files_ingress.api_key), "Content-Type": "multipart/form-data"},
    )
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("Could not parse the multipart form: ") and "400:" not in message
    assert message.endswith(".") and not message.endswith("..")


async def test_expires_after_sets_the_files_expiry(files_ingress: Ingress) -> None:
    """expires_after, as the SDKs send it (bracketed form fields) or as one JSON field, makes the file
    expire that many seconds after its creation; the record's expiry (what the sweep reads) follows."""
    for fields in (
        _policy("created_at", "3600"),
        {"expires_after": '{"anchor": "created_at", "seconds": 7200}'},
    ):
        response = await files_ingress.client.post(
            "/v1/files",
            headers=_auth(files_ingress.api_key),
            files={"file": ("input.jsonl", JSONL, "application/jsonl")},
            data={"purpose": "user_data", **fields},
        )
        assert response.status_code == 200, response.text
        created = response.json()
        asked = 3600 if "expires_after[seconds]" in fields else 7200
        assert created["expires_at"] - created["created_at"] == asked
        score = await files_ingress.redis.zscore(keys.FILES_EXPIRY, created["id"])
        assert score == created["expires_at"]


async def test_expires_after_is_bounded_by_the_operators_file_ttl(
    ingress_factory: IngressFactory, tmp_path: Path
) -> None:
    """A file asked to live longer than batches.file_ttl lives file_ttl, as its expires_at says."""
    async with ingress_factory(batches={"file_ttl": 5000, "storage_dir": str(tmp_path)}) as running:
        response = await running.client.post(
            "/v1/files",
            headers=_auth(running.api_key),
            files={"file": ("input.jsonl", JSONL)},
            data={
                "purpose": "batch",
                "expires_after[anchor]": "created_at",
                "expires_after[seconds]": "86400",
            },
        )
    assert response.status_code == 200, response.text
    assert response.json()["expires_at"] - response.json()["created_at"] == 5000


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        (_policy("created_at", "5"), "expires_after.seconds", "invalid_value"),
        (_policy("created_at", "2592001"), "expires_after.seconds", "invalid_value"),
        (_policy("created_at", "1" * 5000), "expires_after.seconds", "invalid_value"),  # beyond int()
        (_policy("created_at", "1h"), "expires_after.seconds", "invalid_type"),
        (_policy("last_active_at", "3600"), "expires_after.anchor", "invalid_value"),
        ({"expires_after[seconds]": "3600"}, "expires_after.anchor", "missing_required_parameter"),
        ({"expires_after": "3600"}, "expires_after", "invalid_type"),
        ({"expires_after": "{"}, "expires_after", "invalid_value"),
    ],
)
async def test_an_out_of_range_or_malformed_expires_after_is_400(
    files_ingress: Ingress, fields: dict[str, str], param: str, code: str
) -> None:
    """OpenAI's bounds: anchor created_at, seconds from 3600 to 2592000; else 400 naming the field, and
    nothing is stored."""
    response = await files_ingress.client.post(
        "/v1/files",
        headers=_auth(files_ingress.api_key),
        files={"file": ("input.jsonl", JSONL)},
        data={"purpose": "batch", **fields},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code)
    listed = await files_ingress.client.get("/v1/files", headers=_auth(files_ingress.api_key))
    assert listed.json()["data"] == []
