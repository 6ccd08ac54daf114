"""``/v1/batches``: create, retrieve, list and cancel batches, per account.

Creating a batch checks the request itself (input file of the account with purpose ``batch``, endpoint,
completion window, metadata, the expiry of its result files) and records it ``validating``; the batch
driver validates the file's lines and runs them (:mod:`ingress.batches.driver`).
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ingress.batches import files, records
from ingress.batches.expiry_policy import requested_seconds
from ingress.batches.listing import list_object, page, parse_limit
from ingress.batches.services import services
from ingress.request_body import check_json_content_type, request_body
from ingress.validation import parse_json_object
from shared import keys
from shared.errors import InvalidRequest, NotFound

ENDPOINTS: Final = ("/v1/chat/completions",)
WINDOWS: Final = ("24h",)
MAX_METADATA_KEYS: Final = 16


async def create_batch(request: Request) -> Response:
    batch = services(request)
    record = await batch.authenticate(request)
    check_json_content_type(request.headers.get("content-type"))
    body = parse_json_object(await request_body(request, batch.settings.max_body_bytes))
    input_file_id = _string(body, "input_file_id")
    endpoint = _string(body, "endpoint")
    if endpoint not in ENDPOINTS:
        raise InvalidRequest(
            f"Unsupported endpoint '{endpoint}'; supported: {', '.join(ENDPOINTS)}.",
            param="endpoint",
            code="unsupported_value",
        )
    window = _string(body, "completion_window")
    if window not in WINDOWS:
        raise InvalidRequest(
            "'completion_window' must be '24h'.", param="completion_window", code="invalid_value"
        )
    metadata = _metadata(body.get("metadata"))
    output_seconds = requested_seconds(body.get("output_expires_after"), param="output_expires_after")
    try:
        input_file = await files.get_file(batch.redis, input_file_id, record.account_id)
    except NotFound:
        raise InvalidRequest(
            f"No such File object: {input_file_id}", param="input_file_id", code="invalid_value"
        ) from None
    if input_file.purpose != "batch":
        raise InvalidRequest(
            "The input file must have been uploaded with purpose 'batch'.",
            param="input_file_id",
            code="invalid_value",
        )
    created = await records.create_batch(
        batch.redis,
        account_id=record.account_id,
        input_file_id=input_file_id,
        input_bytes=input_file.size,
        endpoint=endpoint,
        completion_window=window,
        window_seconds=batch.settings.batches.completion_window,
        metadata=metadata,
        output_expires_after=output_seconds,
    )
    return JSONResponse(created.to_json())


async def retrieve_batch(request: Request) -> Response:
    batch = services(request)
    record = await batch.authenticate(request)
    found = await records.get_batch(batch.redis, request.path_params["batch_id"], record.account_id)
    return JSONResponse(found.to_json())


async def list_batches(request: Request) -> Response:
    batch = services(request)
    record = await batch.authenticate(request)
    limit = parse_limit(request.query_params.get("limit"), default=20, maximum=100)

    async def load(ids: list[str]) -> list[records.BatchRecord | None]:
        loaded = await records.load_batches(batch.redis, ids)
        return [r if r is not None and r.account_id == record.account_id else None for r in loaded]

    found, has_more = await page(
        batch.redis,
        keys.account_batches(record.account_id),
        after=request.query_params.get("after"),
        limit=limit,
        load=load,
    )
    return JSONResponse(list_object([b.to_json() for b in found], has_more))


async def cancel_batch(request: Request) -> Response:
    batch = services(request)
    record = await batch.authenticate(request)
    found = await records.get_batch(batch.redis, request.path_params["batch_id"], record.account_id)
    return JSONResponse((await records.cancel_batch(batch.redis, found)).to_json())


def _string(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        raise InvalidRequest(
            f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
        )
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"'{name}' must be a non-empty string.", param=name, code="invalid_type")
    return value


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > MAX_METADATA_KEYS:
        raise InvalidRequest(
            f"'metadata' must be an object of at most {MAX_METADATA_KEYS} string values.",
            param="metadata",
            code="invalid_value",
        )
    for key, item in value.items():
        if len(key) > 64 or not isinstance(item, str) or len(item) > 512:
            raise InvalidRequest(
                "'metadata' keys are at most 64 characters and values strings of at most 512.",
                param=f"metadata.{key}",
                code="invalid_value",
            )
    return value
