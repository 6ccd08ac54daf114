"""The one error hierarchy. Every error a client can see is an :class:`AIORouterError`.

Each class carries its HTTP status, the OpenAI-style ``type`` (exactly the codes of the API reference)
and a default ``code``; :meth:`AIORouterError.envelope` renders the ``{"error": {...}}`` body, used both
for HTTP error responses and for the final SSE error event of a stream that already started.

    AIORouterError                    500 api_error
    ├── InvalidRequest                400 invalid_request
    │   ├── UnsupportedApiVersion     400 invalid_request / unsupported_api_version
    │   ├── ApiVersionGone            410 invalid_request / api_version_sunset
    │   ├── NotFound                  404 invalid_request / not_found
    │   │   └── ModelNotFound         404 invalid_request / model_not_found
    │   ├── PayloadTooLarge           413 invalid_request / payload_too_large
    │   └── UpstreamBadRequest        400 invalid_request / upstream_bad_request
    ├── AuthenticationError           401 authentication_error / invalid_api_key
    ├── InsufficientQuota             402 insufficient_quota
    ├── RateLimitExceeded             429 rate_limit_exceeded
    ├── ServiceUnavailable            503 service_unavailable
    │   ├── QueueTimeout              503 service_unavailable / queue_timeout
    │   ├── WorkerLost                503 service_unavailable / worker_lost
    │   ├── ResponseStalled           503 service_unavailable / response_stalled
    │   ├── IngressGone               503 service_unavailable / ingress_gone (worker-side only)
    │   ├── IngressStopping           503 service_unavailable / ingress_stopping
    │   ├── UpstreamUnavailable       503 service_unavailable / upstream_unavailable
    │   │   └── UpstreamTimeout       503 service_unavailable / upstream_timeout
    │   └── StorageUnavailable        503 service_unavailable / storage_unavailable
    ├── UpstreamError                 500 api_error / upstream_error
    └── ConfigError                   500 api_error / config_error (start-up only)

Foreign errors (the upstream HTTP client's, redis') are converted into these where they enter our code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

MAX_MESSAGE_CHARS = 2000
"""An error's message is cut to this many characters (and its ``param`` to :data:`MAX_PARAM_CHARS`):
messages quote what the client sent (an endpoint, a metadata key, an id), which must not come back to
it, or into the logs, at any size."""
MAX_PARAM_CHARS = 256


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class AIORouterError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = None
    default_message: ClassVar[str] = "Internal server error."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = _bounded(message or self.default_message, MAX_MESSAGE_CHARS)
        self.code = code if code is not None else self.default_code
        self.param = _bounded(param, MAX_PARAM_CHARS) if param is not None else None
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(self.message)

    def envelope(self) -> dict[str, Any]:
        """The OpenAI error body: all four keys always present."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def envelope_bytes(self) -> bytes:
        return orjson.dumps(self.envelope())

    def to_event(self) -> dict[str, Any]:
        """What a worker publishes so that the ingress can rebuild this exact error."""
        return {"status": self.status, "headers": self.headers, **self.envelope()["error"]}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, message={self.message!r})"


class InvalidRequest(AIORouterError):
    status = 400
    type = "invalid_request"
    default_message = "Invalid request."


class UnsupportedApiVersion(InvalidRequest):
    default_code = "unsupported_api_version"


class ApiVersionGone(InvalidRequest):
    status = 410
    default_code = "api_version_sunset"


class NotFound(InvalidRequest):
    status = 404
    default_code = "not_found"
    default_message = "Not found."


class ModelNotFound(NotFound):
    default_code = "model_not_found"


class PayloadTooLarge(InvalidRequest):
    status = 413
    default_code = "payload_too_large"


class UpstreamBadRequest(InvalidRequest):
    default_code = "upstream_bad_request"


class AuthenticationError(AIORouterError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"
    default_message = "Invalid or missing API key."


class InsufficientQuota(AIORouterError):
    status = 402
    type = "insufficient_quota"
    default_code = "insufficient_quota"
    default_message = "Insufficient credits."


class RateLimitExceeded(AIORouterError):
    status = 429
    type = "rate_limit_exceeded"
    default_code = "rate_limit_exceeded"
    default_message = "Too many requests."


class ServiceUnavailable(AIORouterError):
    status = 503
    type = "service_unavailable"
    default_code = "service_unavailable"
    default_message = "All providers temporarily unavailable."


class QueueTimeout(ServiceUnavailable):
    default_code = "queue_timeout"
    default_message = "No worker picked up the request in time; retry later."


class WorkerLost(ServiceUnavailable):
    default_code = "worker_lost"
    default_message = "The worker serving this request stopped responding."


class ResponseStalled(ServiceUnavailable):
    default_code = "response_stalled"
    default_message = "The response made no progress for too long and was stopped; retry the request."


class IngressGone(ServiceUnavailable):
    """A worker's job whose reply channel has no subscriber: the ingress that waited for it is gone.
    No client ever sees it; it is the status the job's usage record carries."""

    default_code = "ingress_gone"
    default_message = "Nobody waits for this response any more: its ingress is gone."


class IngressStopping(ServiceUnavailable):
    """A request still open when its ingress' shutdown grace ended (``ingress_shutdown_grace``)."""

    default_code = "ingress_stopping"
    default_message = (
        "This server is restarting and could not finish the response in time; retry the request."
    )


class UpstreamUnavailable(ServiceUnavailable):
    default_code = "upstream_unavailable"


class UpstreamTimeout(UpstreamUnavailable):
    default_code = "upstream_timeout"
    default_message = "The upstream provider timed out."


class StorageUnavailable(ServiceUnavailable):
    default_code = "storage_unavailable"
    default_message = "The file store is unreachable; retry shortly."


class UpstreamError(AIORouterError):
    default_code = "upstream_error"
    default_message = "The upstream provider returned an error."


class ConfigError(AIORouterError):
    default_code = "config_error"
    default_message = "Invalid configuration."


def _classes(root: type[AIORouterError]) -> list[type[AIORouterError]]:
    return [root, *(c for sub in root.__subclasses__() for c in _classes(sub))]


# (status, type) -> the most general class with that pair; built once, never mutated.
_BY_STATUS_AND_TYPE: Mapping[tuple[int, str], type[AIORouterError]] = {
    (c.status, c.type): c for c in reversed(_classes(AIORouterError))
}


def error_from_event(event: Mapping[str, Any]) -> AIORouterError:
    """Rebuild an error published by a worker (see :meth:`AIORouterError.to_event`)."""
    status = int(event.get("status", 500))
    cls = _BY_STATUS_AND_TYPE.get((status, str(event.get("type"))), AIORouterError)
    return cls(
        str(event.get("message") or cls.default_message),
        code=event.get("code"),
        param=event.get("param"),
        headers=event.get("headers") or None,
    )


def codes_of_other_statuses(status: int) -> frozenset[str]:
    """The default codes of every error class whose status is not ``status``: codes that mean one of our
    own outcomes (a refused key, a rate limit, a lost worker), which an upstream's error must not pass
    for (see :func:`workers.providers.upstream_call.client_error_fields`)."""
    found: set[str] = set()
    pending: list[type[AIORouterError]] = [AIORouterError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.default_code and cls.status != status:
            found.add(cls.default_code)
    return frozenset(found)
