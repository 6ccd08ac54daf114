"""One structured log line per completion request (logger ``aiorouter.request``), joined to its worker's
job line (``aiorouter.job``) by ``request_id`` and ``job_id``."""

from __future__ import annotations

import logging
from typing import Any

from ingress.request_record import RequestRecord

log = logging.getLogger("aiorouter.request")


def log_request(record: RequestRecord) -> None:
    """Log a finished request at INFO (nothing is built when INFO is off)."""
    if not log.isEnabledFor(logging.INFO):
        return
    usage = record.usage or {}
    fields: dict[str, Any] = {
        "request_id": record.request_id,
        "job_id": record.job_id or None,
        "model": record.model or None,
        "provider": record.provider or None,
        "status": record.status,
        "error": record.error_code,
        "mode": record.mode,
        "latency_ms": _ms(record.total()),
        "ttft_ms": _ms(record.ttft()),
        "queue_wait_ms": _ms(record.queue_wait()),
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "fallbacks": record.fallbacks,
    }
    log.info("request", extra={"fields": fields})


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
