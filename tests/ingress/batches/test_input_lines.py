"""Validation of a batch's input file, line by line, before anything runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson

from ingress.batches.input_lines import LINE_FIELDS_BYTES, raw_lines, validate_file
from ingress.batches.storage import LocalStorage
from shared.settings import BatchSettings, settings_from_mapping

MODELS = settings_from_mapping({}, env={}).models


def _line(custom_id: str, **body: object) -> bytes:
    request = {"model": "aiorouter/echo", "messages": [{"role": "user", "content": "hi"}], **body}
    return orjson.dumps(
        {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": request}
    )


async def _validate(
    tmp_path: Path, content: bytes, max_body_bytes: int = 4 * 1024 * 1024, **bounds: int
) -> tuple[int, str, list[tuple[int | None, str, str | None]]]:
    storage = LocalStorage(tmp_path)

    async def chunks() -> AsyncIterator[bytes]:
        yield content

    await storage.put("input", chunks())
    result = await validate_file(
        storage,
        "input",
        size=len(content),
        endpoint="/v1/chat/completions",
        models=MODELS,
        bounds=BatchSettings(**bounds),
        max_body_bytes=max_body_bytes,
    )
    return result.total, result.model, [(e.line, e.code, e.param) for e in result.errors]


async def test_a_good_file_counts_its_lines_and_its_one_model(tmp_path: Path) -> None:
    """Blank lines are skipped; a file of valid lines has no errors and reports its single model."""
    total, model, errors = await _validate(tmp_path, _line("a") + b"\n\n" + _line("b") + b"\n")
    assert (total, model, errors) == (2, "aiorouter/echo", [])


async def test_a_line_is_held_to_the_body_bound_of_a_request(tmp_path: Path) -> None:
    """A line whose request is larger than a request body may be on /v1/chat/completions is refused (a
    queued job holds its body in Redis: the operator's max_body_bytes budgets that), a line within it
    is not."""
    big = _line("big", messages=[{"role": "user", "content": "x" * 200_000}])
    small = _line("small")
    limit = 100_000 - LINE_FIELDS_BYTES  # a line may be up to 100,000 bytes here
    _, _, errors = await _validate(tmp_path, small + b"\n" + big, max_body_bytes=limit)
    assert errors == [(2, "payload_too_large", None)]
    _, _, errors = await _validate(tmp_path, small + b"\n" + big, max_body_bytes=len(big))
    assert errors == []


async def test_each_bad_line_is_named(tmp_path: Path) -> None:
    """A body failing the interactive validation, a streaming line, a missing custom_id: each line named."""
    content = b"\n".join([_line("a", temperature=5), _line("b", stream=True), b'{"method": "POST"}'])
    _, _, errors = await _validate(tmp_path, content)
    assert errors == [
        (1, "invalid_value", "body.temperature"),
        (2, "invalid_value", "body.stream"),
        (3, "missing_required_parameter", "custom_id"),
    ]


async def test_provider_preferences_that_rule_out_every_deployment_are_named(tmp_path: Path) -> None:
    """An ``order`` with ``allow_fallbacks: false`` naming no provider of the line's model fails its line,
    as the same body is a 400 on /v1/chat/completions; an order that may fall back does not."""
    content = b"\n".join(
        [
            _line("a", provider={"order": ["elsewhere"], "allow_fallbacks": False}),
            _line("b", provider={"order": ["elsewhere"]}),
        ]
    )
    _, _, errors = await _validate(tmp_path, content)
    assert errors == [(1, "invalid_value", "body.provider.order")]


async def test_too_many_lines_or_bytes_fail_the_file(tmp_path: Path) -> None:
    """More lines than max_lines, or more bytes than max_file_bytes, is an error of the whole file."""
    content = b"\n".join(_line(str(n)) for n in range(5))
    _, _, errors = await _validate(tmp_path, content, max_lines=3)
    assert errors == [(4, "too_many_lines", None)]
    _, _, errors = await _validate(tmp_path, content, max_file_bytes=100)
    assert errors == [(None, "file_too_large", None)]


async def test_an_empty_file_fails(tmp_path: Path) -> None:
    """A file with no lines is an error: there is nothing to run."""
    assert (await _validate(tmp_path, b"\n"))[2] == [(None, "empty_file", None)]


async def test_a_line_nested_deeper_than_a_request_may_be_is_named(tmp_path: Path) -> None:
    """A line whose body nests past the interactive depth limit (a job could not even be written for
    it) is an invalid_json_line, like a chat request's body would be refused."""
    deep = _line("b").replace(b'"messages"', b'"extra":' + b"[" * 300 + b"]" * 300 + b',"messages"')
    _, _, errors = await _validate(tmp_path, _line("a") + b"\n" + deep)
    assert errors == [(2, "invalid_json_line", None)]


async def test_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path: Path) -> None:
    """A file saved with a UTF-8 BOM (Windows editors) validates as the same file without it."""
    total, _, errors = await _validate(tmp_path, b"\xef\xbb\xbf" + _line("a") + b"\n" + _line("b"))
    assert (total, errors) == (2, [])


class _Chunk(bytes):
    """A chunk of a stored file that counts how often bytes are concatenated with it: each such copy of
    the line so far makes reading a long line quadratic in its length."""

    copies = 0

    def __add__(self, other: bytes) -> bytes:  # type: ignore[override]
        _Chunk.copies += 1
        return bytes.__add__(self, other)

    def __radd__(self, other: bytes) -> bytes:
        _Chunk.copies += 1
        return bytes.__add__(other, self)


class _ChunkedStorage:
    """Storage whose one object streams as the given chunks."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def stream(self, key: str) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield _Chunk(chunk)


async def test_a_line_over_many_chunks_is_joined_once_not_at_every_chunk() -> None:
    """A long line that arrives in many chunks (a file of one huge line, say) is read in work linear in
    its length: the line so far is never copied at each chunk, and the lines around it come out whole."""
    chunks = [b"\xef\xbb", b"\xbfa\n\n{", *([b"x" * 100] * 2_000), b"}\nb", b"c\n", b"  \nd"]
    _Chunk.copies = 0

    lines = [line async for line in raw_lines(_ChunkedStorage(chunks), "input")]  # type: ignore[arg-type]

    assert _Chunk.copies == 0
    assert lines == [(1, b"a"), (3, b"{" + b"x" * 200_000 + b"}"), (4, b"bc"), (6, b"d")]
