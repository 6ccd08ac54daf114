"""How an upstream's error status becomes ours: its Retry-After, passed on only as whole seconds; a
client error's code and param, relayed bounded."""

from __future__ import annotations

import gzip
import zlib
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import orjson
import pytest

from shared.errors import MAX_PARAM_CHARS, UpstreamBadRequest, UpstreamError, UpstreamUnavailable
from workers.providers.upstream_call import (
    MAX_CODE_CHARS,
    MAX_ERROR_BODY,
    MAX_RETRY_AFTER,
    readable_body,
    retry_after_seconds,
    status_error,
)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5", 5),
        ("0.2", 1),
        ("-5", 0),
        ("1000000000000", MAX_RETRY_AFTER),
        ("inf", MAX_RETRY_AFTER),
        ("1e400", MAX_RETRY_AFTER),
        ("soon, maybe", None),
        ("nan", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_whole_seconds_within_a_day(value: str | None, seconds: int | None) -> None:
    """A number of seconds is rounded up and kept within [0, a day]; anything else is not passed on."""
    assert retry_after_seconds(value) == seconds


def test_retry_after_as_an_http_date_is_the_seconds_until_then() -> None:
    """The other form HTTP allows, a date, counts from now (a past one is 0)."""
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    assert 115 <= (retry_after_seconds(soon) or 0) <= 121
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0


def test_an_unavailable_upstream_passes_on_a_clean_retry_after_or_none() -> None:
    """A 429 or 503 carries the upstream's wait as whole seconds; a garbled one is dropped, not relayed."""
    kept = status_error("p", 429, {"retry-after": "1000000000000"}, b"")
    assert isinstance(kept, UpstreamUnavailable) and kept.headers == {"Retry-After": str(MAX_RETRY_AFTER)}
    dropped = status_error("p", 503, {"retry-after": "soon, maybe"}, b"")
    assert isinstance(dropped, UpstreamUnavailable) and "Retry-After" not in (dropped.headers or {})


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some servers send it
    ],
)
def test_an_error_body_compressed_anyway_is_read_inflated(encoding: str, encode: Any) -> None:
    """An upstream that compresses its error body despite accept-encoding: identity still gets its
    message across, not the compressed bytes."""
    body = encode(b'{"error": {"message": "max_tokens is too large"}}')
    error = status_error("p", 400, {"content-encoding": encoding}, body)
    assert isinstance(error, UpstreamBadRequest) and error.message == "max_tokens is too large"


def test_an_error_body_inflates_to_a_bound_and_unknown_encodings_are_named() -> None:
    """A compressed error body is inflated to MAX_ERROR_BODY bytes at most (a small body may inflate to
    gigabytes); an encoding we cannot read is named, its bytes not shown."""
    bomb = gzip.compress(b"x" * (50 * MAX_ERROR_BODY))
    assert len(readable_body({"content-encoding": "gzip"}, bomb)) == MAX_ERROR_BODY
    error = status_error("p", 418, {"content-encoding": "br"}, b"\x8b\x01\x80garbage")
    assert error.message == "Provider 'p' answered HTTP 418: (a br-encoded body)"
    broken = status_error("p", 418, {"content-encoding": "gzip"}, b"not gzip")
    assert broken.message == "Provider 'p' answered HTTP 418: (a gzip-encoded body)"


def openai_error(**fields: object) -> bytes:
    return orjson.dumps({"error": {"message": "too long", "type": "invalid_request_error", **fields}})


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_a_client_error_keeps_the_upstreams_code_and_param(status: int) -> None:
    """An OpenAI-shaped client error reaches the client with the upstream's code and param, so that it
    can branch on context_length_exceeded as it would at OpenAI."""
    body = openai_error(param="messages", code="context_length_exceeded")
    error = status_error("p", status, {}, body)
    assert isinstance(error, UpstreamBadRequest) and error.status == 400
    assert (error.code, error.param, error.message) == ("context_length_exceeded", "messages", "too long")
    assert error.envelope()["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize(
    "body",
    [
        openai_error(param=None, code=None),
        openai_error(param=["messages"], code=400),
        openai_error(param="", code=""),
        openai_error(code="x" * (MAX_CODE_CHARS + 1)),
        b'{"error": "too long"}',
        b"<html>too long</html>",
        b"",
    ],
)
def test_a_client_error_without_a_usable_code_keeps_ours(body: bytes) -> None:
    """No code, or one that is no short string, leaves our upstream_bad_request; a param that is no
    string is not relayed."""
    error = status_error("p", 400, {}, body)
    assert isinstance(error, UpstreamBadRequest)
    assert (error.code, error.param) == ("upstream_bad_request", None)


@pytest.mark.parametrize(
    "code", ["ok", "rate_limit_exceeded", "insufficient_quota", "model_not_found", "worker_lost"]
)
def test_an_upstream_code_that_names_one_of_our_outcomes_is_not_relayed(code: str) -> None:
    """An upstream 400 saying ``rate_limit_exceeded`` would pass for our own refusal (and count in its
    metric), ``ok`` for a success in the usage records: such codes leave our upstream_bad_request."""
    error = status_error("p", 400, {}, openai_error(param="messages", code=code))
    assert isinstance(error, UpstreamBadRequest)
    assert (error.code, error.param) == ("upstream_bad_request", "messages")


def test_a_relayed_param_is_bounded_and_other_statuses_relay_nothing() -> None:
    """A long param is cut as ours are; a 401 (our credentials) or a 5xx never carries the upstream's."""
    error = status_error("p", 400, {}, openai_error(param="p" * 10_000, code="invalid_value"))
    assert error.code == "invalid_value" and error.param is not None and len(error.param) == MAX_PARAM_CHARS
    for status in (401, 500):
        other = status_error("p", status, {}, openai_error(param="messages", code="context_length_exceeded"))
        assert other.code in ("upstream_error", "upstream_unavailable") and other.param is None
    assert isinstance(status_error("p", 401, {}, b""), UpstreamError)
