"""The Dashboard's page, static files and account-scoped API in the ingress app: a dashboard token only
ever sees its own account, and bad input gets a clear 4xx in the error envelope."""

from __future__ import annotations

import re

import httpx
import pytest

from ingress import api_keys
from ingress.control import accounts
from ingress.request_body import CONTROL_BODY_LIMIT
from shared import credits
from tests.ingress.conftest import Ingress, IngressFactory


async def sign_in(ingress: Ingress, account_id: str) -> dict[str, str]:
    _, token = await accounts.create_account(ingress.redis, ingress.settings, account_id=account_id)
    return {"Authorization": f"Bearer {token}"}


async def test_page_and_static_files_are_served(ingress: Ingress) -> None:
    """/dashboard is an HTML page whose script and style sheet are served beside it."""
    page = await ingress.client.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset, media_type in (("app.js", "javascript"), ("style.css", "text/css")):
        assert f"/dashboard/static/{asset}" in page.text
        served = await ingress.client.get(f"/dashboard/static/{asset}")
        assert served.status_code == 200 and media_type in served.headers["content-type"]


@pytest.mark.parametrize("authorization", [None, "Bearer dt-unknown", "Bearer ak-whatever", "Basic x"])
async def test_api_needs_a_dashboard_token(ingress: Ingress, authorization: str | None) -> None:
    """Without a known dashboard token every account route is a 401 invalid_dashboard_token."""
    headers = {"Authorization": authorization} if authorization else {}
    response = await ingress.client.get("/dashboard/api/account", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_dashboard_token"


async def test_account_sees_its_plan_limit_and_credit(ingress: Ingress) -> None:
    """The account route shows the signed-in account with its plan's limit and its credit."""
    headers = await sign_in(ingress, "acme")
    await credits.add_credit(ingress.redis, "acme", 2_500_000)
    body = (await ingress.client.get("/dashboard/api/account", headers=headers)).json()
    assert (body["id"], body["plan"], body["status"]) == ("acme", "unverified", "active")
    assert body["rate_limit"]["requests_per_minute"] == 10
    assert body["credit"]["available_usd"] == "2.500000"


async def test_keys_are_created_once_listed_and_revoked(ingress: Ingress) -> None:
    """A created key's secret is returned once and works as an API key; the list never shows secrets;
    revoking marks it revoked."""
    headers = await sign_in(ingress, "acme")
    created = await ingress.client.post("/dashboard/api/keys", json={"name": "ci"}, headers=headers)
    assert created.status_code == 201
    secret = created.json()["secret"]
    record = await api_keys.lookup(ingress.redis, api_keys.digest(secret))
    assert record is not None and (record.account_id, record.name) == ("acme", "ci")
    listed = (await ingress.client.get("/dashboard/api/keys", headers=headers)).json()["data"]
    assert [k["id"] for k in listed] == [record.key_id] and secret not in str(listed)
    revoked = await ingress.client.delete(f"/dashboard/api/keys/{record.key_id}", headers=headers)
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True


async def test_another_accounts_key_cannot_be_revoked(ingress: Ingress) -> None:
    """A dashboard token cannot revoke (or see) a key of another account: 404 key_not_found."""
    mine = await sign_in(ingress, "acme")
    theirs = await sign_in(ingress, "other")
    created = await ingress.client.post("/dashboard/api/keys", json={}, headers=theirs)
    key_id = created.json()["id"]
    response = await ingress.client.delete(f"/dashboard/api/keys/{key_id}", headers=mine)
    assert response.status_code == 404 and response.json()["error"]["code"] == "key_not_found"
    assert (await ingress.client.get("/dashboard/api/keys", headers=mine)).json()["data"] == []


async def test_an_oversized_key_creation_body_is_a_413(ingress: Ingress) -> None:
    """A body past the control plane's limit is refused before it is held whole, and creates nothing."""
    headers = await sign_in(ingress, "acme")
    content = b'{"name": "' + b"x" * CONTROL_BODY_LIMIT + b'"}'
    response = await ingress.client.post("/dashboard/api/keys", content=content, headers=headers)
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    assert await api_keys.list_keys(ingress.redis, "acme") == []


@pytest.mark.parametrize(
    ("content", "param"),
    [(b"{not json", None), (b'{"name": 5}', "name"), (b'{"name": "' + b"x" * 201 + b'"}', "name")],
)
async def test_bad_key_creation_is_a_400(ingress: Ingress, content: bytes, param: str | None) -> None:
    """Malformed JSON, a non-string or an over-long name is a 400 that creates nothing."""
    headers = await sign_in(ingress, "acme")
    response = await ingress.client.post("/dashboard/api/keys", content=content, headers=headers)
    assert response.status_code == 400 and response.json()["error"]["param"] == param
    assert await api_keys.list_keys(ingress.redis, "acme") == []


@pytest.mark.parametrize(
    "days", ["0", "91", "soon", "\u00b2", "\u0661\u0662", "\uff17", "1_0", "9" * 5000, "-0", "7.0"]
)
async def test_bad_usage_range_is_a_400(ingress: Ingress, days: str) -> None:
    """The usage report covers 1 to 90 days written in ASCII digits; anything else (superscripts, other
    scripts' digits, huge numbers) is a 400 naming 'days', never a 500."""
    headers = await sign_in(ingress, "acme")
    response = await ingress.client.get("/dashboard/api/usage", params={"days": days}, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "days"


async def test_usage_covers_the_requested_days(ingress: Ingress) -> None:
    """The usage report names its range and is empty for an account that never called the API."""
    headers = await sign_in(ingress, "acme")
    response: httpx.Response = await ingress.client.get("/dashboard/api/usage?days=7", headers=headers)
    body = response.json()
    assert response.status_code == 200 and body["data"] == [] and body["totals_by_model"] == []
    assert body["start"] < body["end"]


async def test_every_dashboard_response_carries_the_security_headers(ingress: Ingress) -> None:
    """The page, its static files, API answers and API errors all forbid framing, sniffing, referrers
    and any script or style not served by the Dashboard itself."""
    headers = await sign_in(ingress, "acme")
    responses = [
        await ingress.client.get("/dashboard"),
        await ingress.client.get("/dashboard/static/app.js"),
        await ingress.client.get("/dashboard/static/style.css"),
        await ingress.client.get("/dashboard/api/account", headers=headers),
        await ingress.client.get("/dashboard/api/account"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 401]
    for response in responses:
        policy = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"


async def test_page_has_no_inline_script_or_style(ingress: Ingress) -> None:
    """The policy forbids inline code, so the page must not need any."""
    page = (await ingress.client.get("/dashboard")).text
    assert "<style" not in page and not re.search(r"\s(style|on[a-z]+)\s*=", page)
    scripts = page.split("<script")[1:]
    assert scripts and all(tag.startswith(' src="/dashboard/static/') for tag in scripts)


async def test_suspended_account_cannot_create_keys(ingress: Ingress) -> None:
    """A suspended account's dashboard token gets 401 account_suspended in the envelope and no key."""
    headers = await sign_in(ingress, "acme")
    await accounts.update_account(ingress.redis, ingress.settings, "acme", status="suspended")
    response = await ingress.client.post("/dashboard/api/keys", json={"name": "x"}, headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "account_suspended"
    assert await api_keys.list_keys(ingress.redis, "acme") == []


async def test_key_caps_answer_in_the_envelope(ingress_factory: IngressFactory) -> None:
    """Over the live-key cap the Dashboard answers 400 too_many_keys; over the hourly cap 429 with
    Retry-After."""
    async with ingress_factory(max_keys_per_account=1, key_creations_per_hour=2) as ingress:
        headers = await sign_in(ingress, "acme")
        url = "/dashboard/api/keys"
        first = await ingress.client.post(url, json={"name": "one"}, headers=headers)
        assert first.status_code == 201
        full = await ingress.client.post(url, json={"name": "two"}, headers=headers)
        assert full.status_code == 400 and full.json()["error"]["code"] == "too_many_keys"
        await ingress.client.delete(f"{url}/{first.json()['id']}", headers=headers)
        second = await ingress.client.post(url, json={}, headers=headers)
        assert second.status_code == 201
        await ingress.client.delete(f"{url}/{second.json()['id']}", headers=headers)
        fast = await ingress.client.post(url, json={}, headers=headers)
        assert fast.status_code == 429, fast.text
        assert fast.json()["error"]["code"] == "key_creation_rate_limited" and fast.headers["retry-after"]


async def test_account_sees_its_batches_and_downloads_their_files(
    ingress_factory: object, tmp_path: object
) -> None:
    """The batches route lists only the signed-in account's batches; the file route downloads only its
    own files (another account's is 404)."""
    from pathlib import Path

    from ingress.batches import files, records
    from ingress.batches.storage import LocalStorage

    assert isinstance(tmp_path, Path)
    async with ingress_factory(batches={"storage_dir": str(tmp_path)}) as running:  # type: ignore[operator]
        headers = await sign_in(running, "acme")
        other = await sign_in(running, "rival")

        async def content() -> object:
            yield b'{"custom_id": "a"}\n'

        stored = await files.store_file(
            running.redis, LocalStorage(tmp_path), account_id="acme", filename="out.jsonl",
            purpose="batch_output", chunks=content(), ttl=60,
        )  # fmt: skip
        batch = await records.create_batch(
            running.redis, account_id="acme", input_file_id=stored.id, input_bytes=stored.size,
            endpoint="/v1/chat/completions", completion_window="24h", window_seconds=60, metadata=None,
        )  # fmt: skip
        listed = (await running.client.get("/dashboard/api/batches", headers=headers)).json()["data"]
        assert [b["id"] for b in listed] == [batch.id] and listed[0]["status"] == "validating"
        assert (await running.client.get("/dashboard/api/batches", headers=other)).json()["data"] == []
        path = f"/dashboard/api/files/{stored.id}/content"
        downloaded = await running.client.get(path, headers=headers)
        assert downloaded.content == b'{"custom_id": "a"}\n'
        assert (await running.client.get(path, headers=other)).status_code == 404


async def test_downloads_name_any_file_safely_and_missing_content_is_404(
    ingress_factory: object, tmp_path: object
) -> None:
    """A file named with non-Latin-1 letters, a quote or a NUL downloads with a Content-Disposition that
    carries the exact name in ``filename*`` and no injected parameter; a file whose content is lost is a
    404 in the envelope, not a 200 cut short; every Dashboard route's answer has the security headers."""
    from pathlib import Path
    from urllib.parse import unquote

    from ingress.batches import files
    from ingress.batches.storage import LocalStorage
    from ingress.control.dashboard.routes import SECURITY_HEADERS

    assert isinstance(tmp_path, Path)
    async with ingress_factory(batches={"storage_dir": str(tmp_path)}) as running:  # type: ignore[operator]
        headers = await sign_in(running, "acme")

        async def content() -> object:
            yield b'{"custom_id": "a"}\n'

        for name in ["日本語.jsonl", 'a"; x="y.jsonl', "nul\x00.jsonl"]:
            stored = await files.store_file(
                running.redis, LocalStorage(tmp_path), account_id="acme", filename=name,
                purpose="batch_output", chunks=content(), ttl=60,
            )  # fmt: skip
            path = f"/dashboard/api/files/{stored.id}/content"
            downloaded = await running.client.get(path, headers=headers)
            assert downloaded.status_code == 200 and downloaded.content == b'{"custom_id": "a"}\n'
            disposition = downloaded.headers["content-disposition"]
            plain, exact = disposition.split("; filename*=UTF-8''")
            assert plain.startswith('attachment; filename="') and plain.count('"') == 2
            assert unquote(exact) == name
            assert all(downloaded.headers[k] == v for k, v in SECURITY_HEADERS.items())
        await LocalStorage(tmp_path).delete(stored.storage_key)
        lost = await running.client.get(path, headers=headers)
        assert lost.status_code == 404 and lost.json()["error"]["code"] == "not_found"
        listed = await running.client.get("/dashboard/api/batches", headers=headers)
        assert all(listed.headers[k] == v for k, v in SECURITY_HEADERS.items())
