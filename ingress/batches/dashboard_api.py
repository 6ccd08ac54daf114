"""What the Dashboard shows of an account's batches: the latest ones with their status and counts, and
their output and error files to download (with the dashboard token, not an API key)."""

from __future__ import annotations

from urllib.parse import quote

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ingress.batches import files, records
from ingress.batches.files_api import opened_content
from ingress.batches.services import services
from ingress.control.accounts import Account
from shared import keys

SHOWN = 50


async def account_batches(request: Request, account: Account) -> Response:
    """The account's latest batches, newest first, as ``Batch`` objects."""
    batch = services(request)
    ids = [_text(raw) for raw in await batch.redis.zrevrange(keys.account_batches(account.id), 0, SHOWN - 1)]
    found = [
        r
        for r in await records.load_batches(batch.redis, ids)
        if r is not None and r.account_id == account.id
    ]
    body = {"object": "list", "data": [r.to_json() for r in found]}
    return Response(orjson.dumps(body), media_type="application/json", headers={"Cache-Control": "no-store"})


async def account_file_content(request: Request, account: Account) -> Response:
    """One of the account's files, as a download."""
    batch = services(request)
    found = await files.get_file(batch.redis, str(request.path_params["file_id"]), account.id)
    return StreamingResponse(
        await opened_content(batch.storage, found),  # content lost: its 404, before the response starts
        media_type="application/jsonl",
        headers={
            "Content-Disposition": attachment(found.filename),
            "Content-Length": str(found.size),
            "Cache-Control": "no-store",
        },
    )


def attachment(filename: str) -> str:
    """A ``Content-Disposition`` naming ``filename`` (RFC 6266): an ASCII ``filename`` for old clients,
    each character it cannot carry (non-ASCII, a quote, a backslash, a control character) as ``_``, and
    the exact name as UTF-8 in ``filename*``."""
    plain = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename) or "file"
    exact = quote(filename.encode(errors="replace"), safe="")
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{exact}"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
