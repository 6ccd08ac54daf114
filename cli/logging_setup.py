"""Logging of the server processes: the level and format of the settings (``log_level``,
``log_format``) on one stderr handler, and rq's periodic "cleaning registries" line kept out of INFO.

``json`` writes one JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, and the structured
fields a record carries in ``extra={"fields": {...}}`` (the per-request and per-job lines of
:mod:`ingress.request_log` and :mod:`workers.job_report`) at the top level.  ``text`` writes the classic
line with those fields appended as ``key=value``.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """The classic line, plus a record's structured fields as ``key=value``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second: tuple[int, str] = (-1, "")  # a second and its formatted time, replaced at once

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """logging's own default time, with the part down to the second formatted once per second (a
        server writes a line per request: ``strftime`` on each was a third of the line's cost)."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second, text = self._second
        if int(record.created) != second:
            second = int(record.created)
            text = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = (second, text)
        return f"{text},{int(record.msecs):03d}"  # logging's default_msec_format, "%s,%03d"

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            text += " " + " ".join(f"{key}={value}" for key, value in fields.items() if value is not None)
        return text


class RegistryCleaningFilter(logging.Filter):
    """Drops rq's "cleaning registries" line (every maintenance interval) unless DEBUG is on."""

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            return True
        return not (isinstance(record.msg, str) and "cleaning registries" in record.msg)


def configure_logging(settings: Settings, stream: Any = None) -> None:
    """Route every logger through one stderr handler at ``settings.log_level`` in ``settings.log_format``."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    rq_worker = logging.getLogger("rq.worker")
    if not any(isinstance(f, RegistryCleaningFilter) for f in rq_worker.filters):
        rq_worker.addFilter(RegistryCleaningFilter())
