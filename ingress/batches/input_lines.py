"""The lines of a batch's input file: read from storage, parsed and validated one by one.

A line is ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}``; its body
goes through the same validation as ``POST /v1/chat/completions``
(:func:`ingress.validation.validate_chat_request`) and its model must be in the catalog.  Blank lines are
skipped; lines are numbered from 1 as in the file, and indexed from 0 among the non-blank ones (the index
is what the driver tracks).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from ingress.batches.storage import FileStorage
from ingress.provider_preferences import check_served
from ingress.validation import MAX_JSON_DEPTH, ChatRequest, nests_too_deep, validate_chat_request
from shared.errors import MAX_MESSAGE_CHARS, InvalidRequest
from shared.settings import BatchSettings, ModelEntry

MAX_REPORTED_ERRORS: Final = 100
LINE_FIELDS_BYTES: Final = 64 * 1024
"""Bytes a line may hold beyond a request body's bound: its ``custom_id``, ``method`` and ``url``."""


@dataclass(frozen=True, slots=True)
class BatchLine:
    index: int  # 0-based among the file's non-blank lines
    number: int  # 1-based line number in the file
    custom_id: str
    request: ChatRequest


class LineError(Exception):
    def __init__(self, code: str, message: str, *, line: int | None, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message[:MAX_MESSAGE_CHARS]  # it may quote a custom_id, as long as the line
        self.line = line
        self.param = param
        self.custom_id = ""  # the line's, when it has a valid one (its error result names it)

    def to_json(self) -> dict[str, Any]:
        """OpenAI's ``BatchError``."""
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


UTF8_BOM: Final = b"\xef\xbb\xbf"


async def raw_lines(storage: FileStorage, key: str) -> AsyncGenerator[tuple[int, bytes]]:
    """``(line number, line)`` of every non-blank line, streamed; a UTF-8 byte order mark that starts the
    file (as some editors on Windows write one) is not part of line 1.  A line that spans many chunks is
    kept as its pieces and joined once it ends: joining at each chunk would copy it every time."""
    number = 0
    pending: list[bytes] = []  # the pieces of the line not ended yet
    at_start = True
    async for chunk in storage.stream(key):
        if at_start:
            head = b"".join([*pending, chunk])
            if len(head) < len(UTF8_BOM) and UTF8_BOM.startswith(head):
                pending = [head]  # too short yet to tell
                continue
            chunk, pending, at_start = head.removeprefix(UTF8_BOM), [], False
        *ended, last = chunk.split(b"\n")
        if ended:
            ended[0] = b"".join([*pending, ended[0]])
            pending = []
        for line in ended:
            number += 1
            if line.strip():
                yield number, line
        if last:
            pending.append(last)
    rest = b"".join(pending)
    if at_start:
        rest = rest.removeprefix(UTF8_BOM)
    if rest.strip():
        yield number + 1, rest


def parse_line(
    raw: bytes, *, index: int, number: int, endpoint: str, models: Mapping[str, ModelEntry]
) -> BatchLine:
    """One input line, validated; :class:`LineError` names what is wrong."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise LineError("invalid_json_line", "This line is not valid JSON.", line=number) from None
    if not isinstance(data, dict):
        raise LineError("invalid_json_line", "This line is not a JSON object.", line=number)
    if nests_too_deep(raw, data):
        message = f"This line nests arrays and objects more than {MAX_JSON_DEPTH} deep."
        raise LineError("invalid_json_line", message, line=number)
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise LineError(
            "missing_required_parameter",
            "'custom_id' must be a non-empty string.",
            line=number,
            param="custom_id",
        )
    try:
        return BatchLine(
            index, number, custom_id, _request(data, number=number, endpoint=endpoint, models=models)
        )
    except LineError as exc:
        exc.custom_id = custom_id
        raise


def _request(
    data: dict[str, Any], *, number: int, endpoint: str, models: Mapping[str, ModelEntry]
) -> ChatRequest:
    """The line's request, validated (``data`` has a valid ``custom_id``)."""
    if data.get("method") != "POST":
        raise LineError("invalid_value", "'method' must be 'POST'.", line=number, param="method")
    if data.get("url") != endpoint:
        raise LineError(
            "invalid_url", f"'url' must be '{endpoint}', the batch's endpoint.", line=number, param="url"
        )
    body = data.get("body")
    if not isinstance(body, dict):
        raise LineError("invalid_request", "'body' must be a JSON object.", line=number, param="body")
    try:
        request = validate_chat_request(body)
    except InvalidRequest as exc:
        param = f"body.{exc.param}" if exc.param else "body"
        raise LineError(exc.code or "invalid_request", exc.message, line=number, param=param) from None
    if request.stream:
        raise LineError(
            "invalid_value", "Batch lines cannot stream: drop 'stream'.", line=number, param="body.stream"
        )
    if request.model not in models:
        raise LineError(
            "model_not_found", f"The model '{request.model}' does not exist.", line=number, param="body.model"
        )
    try:
        check_served(models[request.model], request.preferences)
    except InvalidRequest as exc:  # the line could run nowhere: routing would refuse every dispatch of it
        param = f"body.{exc.param}"
        raise LineError(exc.code or "invalid_value", exc.message, line=number, param=param) from None
    return request


@dataclass(slots=True)
class Validation:
    total: int = 0
    model: str = ""  # the one model of every line, or "" when lines name several
    errors: list[LineError] = field(default_factory=list)


async def validate_file(
    storage: FileStorage,
    key: str,
    *,
    size: int,
    endpoint: str,
    models: Mapping[str, ModelEntry],
    bounds: BatchSettings,
    max_body_bytes: int,
) -> Validation:
    """Every line checked (up to :data:`MAX_REPORTED_ERRORS` reported); custom ids unique; the file within
    the line and size bounds, and each line within ``max_body_bytes`` (the bound of a request's body on
    ``/v1/chat/completions``) plus :data:`LINE_FIELDS_BYTES`.  Nothing is run unless ``errors`` is empty."""
    max_line_bytes = max_body_bytes + LINE_FIELDS_BYTES
    result = Validation()
    if size > bounds.max_file_bytes:
        result.errors.append(
            LineError("file_too_large", f"The input file exceeds {bounds.max_file_bytes} bytes.", line=None)
        )
        return result
    seen: set[str] = set()
    models_used: set[str] = set()
    async for number, raw in raw_lines(storage, key):
        if result.total >= bounds.max_lines:
            result.errors.append(
                LineError(
                    "too_many_lines", f"The input file has more than {bounds.max_lines} lines.", line=number
                )
            )
            break
        try:
            if len(raw) > max_line_bytes:
                raise LineError(
                    "payload_too_large",
                    f"This line is over {max_line_bytes} bytes: a batch line's request is held to the "
                    f"{max_body_bytes} bytes of a request body, as on /v1/chat/completions.",
                    line=number,
                )
            line = parse_line(raw, index=result.total, number=number, endpoint=endpoint, models=models)
            if line.custom_id in seen:
                raise LineError(
                    "duplicate_custom_id",
                    f"The custom_id '{line.custom_id}' appears more than once.",
                    line=number,
                    param="custom_id",
                )
            seen.add(line.custom_id)
            models_used.add(line.request.model)
        except LineError as exc:
            if len(result.errors) < MAX_REPORTED_ERRORS:
                result.errors.append(exc)
        result.total += 1
    if result.total == 0 and not result.errors:
        result.errors.append(LineError("empty_file", "The input file has no lines.", line=None))
    result.model = next(iter(models_used)) if len(models_used) == 1 else ""
    return result
