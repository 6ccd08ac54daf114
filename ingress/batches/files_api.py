"""``/v1/files``: upload (multipart), list, retrieve, download and delete files, per account.

An upload streams: python-multipart (Starlette's form parser) spools the file part to a temporary file
past 1 MB, and the part is copied to storage in chunks; the body is counted as it arrives and refused
with 413 once it passes ``BatchSettings.max_file_bytes`` (plus room for the form's other fields).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import IO, Any

import orjson
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Message, Receive

from ingress.api_keys import ApiKeyRecord
from ingress.batches import files
from ingress.batches.expiry_policy import file_lifetime, requested_seconds
from ingress.batches.listing import list_object, page, parse_limit
from ingress.batches.services import services
from ingress.batches.storage import FileStorage
from shared import keys
from shared.errors import InvalidRequest, PayloadTooLarge

FORM_OVERHEAD = 64 * 1024  # bytes of multipart framing and small fields allowed past the file size cap
UPLOAD_CHUNK = 1024 * 1024


async def create_file(request: Request) -> Response:
    batch = services(request)
    record = await batch.authenticate(request)
    held = await batch.redis.zcard(keys.account_files(record.account_id))
    if held >= batch.settings.batches.max_files_per_account:  # before a byte of the upload is read
        raise InvalidRequest(
            f"This account holds {held} files, the most it may: delete some (DELETE /v1/files/{{id}}) "
            "or wait for them to expire.",
            code="too_many_files",
        )
    limit = batch.settings.batches.max_file_bytes
    counted = Request(request.scope, _capped(request.receive, limit + FORM_OVERHEAD))
    try:
        form = await counted.form(max_files=1, max_fields=8)
    except PayloadTooLarge:
        raise
    except Exception as exc:  # Starlette's MultiPartException, HTTPException (a 400) and parser errors
        reason = str(exc.detail if isinstance(exc, HTTPException) else exc).rstrip(".")
        raise InvalidRequest(f"Could not parse the multipart form: {reason}.", code="invalid_value") from exc
    try:
        upload = form.get("file")
        purpose = form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest(
                "The 'file' field (a file) is required.", param="file", code="missing_required_parameter"
            )
        if not isinstance(purpose, str) or purpose not in files.PURPOSES:
            allowed = ", ".join(sorted(files.PURPOSES))
            raise InvalidRequest(
                f"'purpose' must be one of: {allowed}.", param="purpose", code="invalid_value"
            )
        requested = requested_seconds(_expires_after(form), param="expires_after")
        if upload.size is not None and upload.size > limit:
            raise PayloadTooLarge(f"The file exceeds the limit of {limit} bytes.")
        stored = await files.store_file(
            batch.redis,
            batch.storage,
            account_id=record.account_id,
            filename=upload.filename or "upload.jsonl",
            purpose=purpose,
            chunks=_read(upload.file),
            ttl=file_lifetime(requested, batch.settings.batches.file_ttl),
        )
    finally:
        await form.close()
    return JSONResponse(stored.to_json())


async def list_files(request: Request) -> Response:
    batch = services(request)
    record = await batch.authenticate(request)
    query = request.query_params
    limit = parse_limit(query.get("limit"), default=10_000, maximum=10_000)
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be 'asc' or 'desc'.", param="order", code="invalid_value")
    purpose = query.get("purpose")

    def keep(item: files.FileRecord) -> bool:
        return purpose is None or item.purpose == purpose

    async def load(ids: list[str]) -> list[files.FileRecord | None]:
        loaded = await files.load_files(batch.redis, ids)
        return [r if r is not None and r.account_id == record.account_id else None for r in loaded]

    found, has_more = await page(
        batch.redis,
        keys.account_files(record.account_id),
        after=query.get("after"),
        limit=limit,
        load=load,
        keep=keep,
        ascending=order == "asc",
    )
    return JSONResponse(list_object([f.to_json() for f in found], has_more))


async def retrieve_file(request: Request) -> Response:
    batch = services(request)
    found = await _owned(request, await batch.authenticate(request))
    return JSONResponse(found.to_json())


async def file_content(request: Request) -> Response:
    batch = services(request)
    found = await _owned(request, await batch.authenticate(request))
    return StreamingResponse(
        await opened_content(batch.storage, found),
        media_type="application/octet-stream",
        headers={"Content-Length": str(found.size)},
    )


async def delete_file(request: Request) -> Response:
    batch = services(request)
    found = await _owned(request, await batch.authenticate(request))
    await files.delete_file(batch.redis, batch.storage, found)
    return JSONResponse({"id": found.id, "object": "file", "deleted": True})


async def _owned(request: Request, record: ApiKeyRecord) -> files.FileRecord:
    return await files.get_file(services(request).redis, request.path_params["file_id"], record.account_id)


def _expires_after(form: FormData) -> Any:
    """The form's ``expires_after``: as OpenAI's SDKs send it (``expires_after[anchor]`` and
    ``expires_after[seconds]`` fields), or one field holding a JSON object."""
    anchor, seconds = form.get("expires_after[anchor]"), form.get("expires_after[seconds]")
    if anchor is not None or seconds is not None:
        return {"anchor": anchor, "seconds": seconds}
    raw = form.get("expires_after")
    if not isinstance(raw, str):
        return raw  # None, or a file part: refused as not an object
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            "'expires_after' must be a JSON object.", param="expires_after", code="invalid_value"
        ) from None


def _capped(receive: Receive, limit: int) -> Receive:
    received = 0

    async def counting() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise PayloadTooLarge(f"The upload exceeds the limit of {limit - FORM_OVERHEAD} bytes.")
        return message

    return counting


async def _read(handle: IO[bytes]) -> AsyncIterator[bytes]:
    await asyncio.to_thread(handle.seek, 0)
    while chunk := await asyncio.to_thread(handle.read, UPLOAD_CHUNK):
        yield chunk


async def opened_content(storage: FileStorage, found: files.FileRecord) -> AsyncIterator[bytes]:
    """A file's content to stream, its first chunk read already: a missing object raises its 404 here,
    before a response starts."""
    chunks = storage.stream(found.storage_key)
    first = await anext(chunks, b"")
    return _prepend(first, chunks)


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk
