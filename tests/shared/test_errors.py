"""The error hierarchy: each class' status/type/code, the envelope, and the worker → ingress round trip."""

from __future__ import annotations

import orjson
import pytest

from shared import errors

TABLE = [
    (errors.AIORouterError, 500, "api_error", None),
    (errors.InvalidRequest, 400, "invalid_request", None),
    (errors.UnsupportedApiVersion, 400, "invalid_request", "unsupported_api_version"),
    (errors.ApiVersionGone, 410, "invalid_request", "api_version_sunset"),
    (errors.NotFound, 404, "invalid_request", "not_found"),
    (errors.ModelNotFound, 404, "invalid_request", "model_not_found"),
    (errors.PayloadTooLarge, 413, "invalid_request", "payload_too_large"),
    (errors.UpstreamBadRequest, 400, "invalid_request", "upstream_bad_request"),
    (errors.AuthenticationError, 401, "authentication_error", "invalid_api_key"),
    (errors.InsufficientQuota, 402, "insufficient_quota", "insufficient_quota"),
    (errors.RateLimitExceeded, 429, "rate_limit_exceeded", "rate_limit_exceeded"),
    (errors.ServiceUnavailable, 503, "service_unavailable", "service_unavailable"),
    (errors.QueueTimeout, 503, "service_unavailable", "queue_timeout"),
    (errors.WorkerLost, 503, "service_unavailable", "worker_lost"),
    (errors.UpstreamUnavailable, 503, "service_unavailable", "upstream_unavailable"),
    (errors.UpstreamTimeout, 503, "service_unavailable", "upstream_timeout"),
    (errors.UpstreamError, 500, "api_error", "upstream_error"),
    (errors.ConfigError, 500, "api_error", "config_error"),
]
API_REFERENCE_TYPES = {
    "invalid_request",
    "authentication_error",
    "insufficient_quota",
    "rate_limit_exceeded",
    "api_error",
    "service_unavailable",
}


@pytest.mark.parametrize(("cls", "status", "type_", "code"), TABLE)
def test_class_carries_status_type_and_code(
    cls: type[errors.AIORouterError], status: int, type_: str, code: str | None
) -> None:
    """Each class has the HTTP status, API-reference type and default code the docstring tree promises."""
    error = cls()
    assert (error.status, error.type, error.code) == (status, type_, code)
    assert error.type in API_REFERENCE_TYPES and error.message


def test_envelope_has_all_four_keys() -> None:
    """The envelope always carries message, type, param and code, even when param and code are null."""
    assert errors.InvalidRequest("bad").envelope() == {
        "error": {"message": "bad", "type": "invalid_request", "param": None, "code": None}
    }
    error = errors.InvalidRequest("Too hot.", param="temperature", code="invalid_value")
    assert orjson.loads(error.envelope_bytes()) == {
        "error": {
            "message": "Too hot.",
            "type": "invalid_request",
            "param": "temperature",
            "code": "invalid_value",
        }
    }


@pytest.mark.parametrize(("cls", "status", "type_", "code"), TABLE)
def test_event_round_trip(
    cls: type[errors.AIORouterError], status: int, type_: str, code: str | None
) -> None:
    """An error published by a worker is rebuilt by the ingress with the same status, body and headers."""
    original = cls("it broke", param="model", headers={"Retry-After": "3"})
    rebuilt = errors.error_from_event(orjson.loads(orjson.dumps(original.to_event())))
    assert rebuilt.status == status and rebuilt.envelope() == original.envelope()
    assert rebuilt.headers == {"Retry-After": "3"}


def test_unknown_event_falls_back_to_api_error() -> None:
    """An event with a status/type pair we do not know becomes a 500 api_error, keeping its message."""
    rebuilt = errors.error_from_event({"status": 418, "type": "teapot", "message": "short and stout"})
    assert (rebuilt.status, rebuilt.type, rebuilt.message) == (500, "api_error", "short and stout")


def test_a_message_quoting_the_client_is_bounded() -> None:
    """An error that quotes what the client sent (a 300 KB field) answers a bounded message and param."""
    error = errors.InvalidRequest(f"Unsupported endpoint '{'x' * 300_000}'.", param="p" * 10_000)
    envelope = error.envelope()["error"]
    assert len(envelope["message"]) <= errors.MAX_MESSAGE_CHARS and envelope["message"].endswith("...")
    assert len(envelope["param"]) <= 256
