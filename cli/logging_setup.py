"""Logging of the server processes: the level and format of the settings (``log_level``,
``log_format``) on one stderr handler, and rq's periodic "cleaning registries" line kept out of INFO.

``json`` writes one JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, and the structured
fields a record carries in ``extra={"fields": {...}}`` (the per-request and per-job lines of
:mod:`ingress.request_log` and :mod:`workers.job_report`) at the top level.  ``text`` writes the classic
line with those fields appended as ``key=value``.

Fields carry what clients and upstreams sent (a model name, an error message), so a record stays one
line of bounded size whatever they hold: a field's text is cut at :data:`FIELD_LIMIT` characters, a
message at :data:`MESSAGE_LIMIT`; in ``text`` a field with spaces, quotes or unprintable characters is
quoted with those escaped, and unprintable characters of a message are escaped (a newline in a model
name cannot start a forged line).  JSON escapes them by itself, and the line separators U+2028 and
U+2029 are escaped too.
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
FIELD_LIMIT = 256
MESSAGE_LIMIT = 8192


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def escaped(text: str) -> str:
    """``text`` with its unprintable characters (newlines, NUL, U+2028, ...) written as escapes."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


_PLAIN_NUMBERS = (int, float)  # exactly these types: their text is short, printable and unquoted


def _field_text(value: Any) -> str:
    if type(value) in _PLAIN_NUMBERS:  # most fields: ids are strings, the rest numbers
        return str(value)
    text = _bounded(value if type(value) is str else str(value), FIELD_LIMIT)
    if text.isprintable() and " " not in text and '"' not in text and text:
        return text
    return '"' + escaped(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": _bounded(record.getMessage(), MESSAGE_LIMIT),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(
                (key, _bounded(value, FIELD_LIMIT) if isinstance(value, str) else value)
                for key, value in fields.items()
            )
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        text = orjson.dumps(line, default=str).decode()
        if "\u2028" in text or "\u2029" in text:  # valid in JSON, yet line ends to many readers
            text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        return text


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

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = _bounded(record.message, MESSAGE_LIMIT)
        record.message = message if message.isprintable() else escaped(message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            text += " " + " ".join(
                [f"{key}={_field_text(value)}" for key, value in fields.items() if value is not None]
            )
        return text


class RegistryCleaningFilter(logging.Filter):
    """Drops rq's "cleaning registries" line (every maintenance interval) unless DEBUG is on."""

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            return True
        return not (isinstance(record.msg, str) and "cleaning registries" in record.msg)


def configure_logging(settings: Settings, stream: Any = None) -> None:
    """Route every logger through one stderr handler at ``settings.log_level`` in ``settings.log_format``."""
    # No format of these shows a record's thread, process or source line, so logging need not look
    # them up for each record (the logging HOWTO's "Optimization" table): a line per request and per job.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
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
