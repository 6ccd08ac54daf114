"""What the Dashboard shows of an account's batches: the latest ones with their status and counts, and
their output and error files to download (with the dashboard token, not an API key)."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ingress.batches import files, records
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
        batch.storage.stream(found.storage_key),
        media_type="application/jsonl",
        headers={
            "Content-Disposition": f'attachment; filename="{found.filename}"',
            "Content-Length": str(found.size),
            "Cache-Control": "no-store",
        },
    )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
