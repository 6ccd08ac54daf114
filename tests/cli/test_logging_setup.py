"""Logging of the server processes: JSON or text lines with a record's structured fields, the level of
the settings, and rq's "cleaning registries" line kept out of INFO."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from cli.logging_setup import FIELD_LIMIT, MESSAGE_LIMIT, TEXT_FORMAT, TextFormatter, configure_logging
from shared.settings import settings_from_mapping


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Put the root logger and rq's worker logger back as they were."""
    root, rq_worker = logging.getLogger(), logging.getLogger("rq.worker")
    handlers, level, filters = list(root.handlers), root.level, list(rq_worker.filters)
    looked_up = (logging.logThreads, logging.logProcesses, logging.logMultiprocessing, logging._srcfile)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    rq_worker.filters[:] = filters
    logging.logThreads, logging.logProcesses, logging.logMultiprocessing, logging._srcfile = looked_up


def configured(stream: io.StringIO, **settings: str) -> None:
    configure_logging(settings_from_mapping(settings, env={}), stream=stream)


@pytest.mark.usefixtures("restored_logging")
def test_json_lines_carry_the_structured_fields() -> None:
    """With log_format = "json" a record is one JSON object with its fields at the top level."""
    out = io.StringIO()
    configured(out, log_format="json")
    logging.getLogger("aiorouter.request").info(
        "request", extra={"fields": {"request_id": "r1", "status": 200}}
    )
    line = orjson.loads(out.getvalue().splitlines()[-1])
    assert line["msg"] == "request" and line["logger"] == "aiorouter.request" and line["level"] == "INFO"
    assert line["request_id"] == "r1" and line["status"] == 200


@pytest.mark.usefixtures("restored_logging")
def test_text_lines_append_the_fields_and_the_level_filters() -> None:
    """With log_format = "text" the fields follow as key=value; below log_level nothing is written."""
    out = io.StringIO()
    configured(out, log_format="text", log_level="WARNING")
    logger = logging.getLogger("aiorouter.job")
    logger.info("job", extra={"fields": {"job_id": "j1"}})
    logger.warning("job", extra={"fields": {"job_id": "j2", "error": None}})
    assert out.getvalue().count("\n") == 1
    assert out.getvalue().rstrip().endswith("aiorouter.job: job job_id=j2")


@pytest.mark.usefixtures("restored_logging")
def test_rq_registry_cleaning_lines_are_gone_at_info() -> None:
    """rq's "cleaning registries" INFO line is dropped at the default level, kept under DEBUG."""
    out = io.StringIO()
    configured(out)
    rq_log = logging.getLogger("rq.worker")
    rq_log.info("Worker %s: cleaning registries for queue: %s", "w1", "simulated")
    rq_log.info("Worker %s: serving pool %s", "w1", "simulated")
    assert "cleaning registries" not in out.getvalue() and "serving pool" in out.getvalue()
    configured(out, log_level="DEBUG")
    rq_log.info("Worker %s: cleaning registries for queue: %s", "w1", "simulated")
    assert "cleaning registries" in out.getvalue()


def test_text_lines_keep_loggings_own_time_format() -> None:
    """The text line's time, formatted down to the second once per second, is what logging's default
    formatter writes, across second boundaries and in any order."""
    ours, reference = TextFormatter(), logging.Formatter(TEXT_FORMAT)
    for created in (1_796_610_000.999, 1_796_610_001.0, 1_796_610_001.5, 1_796_609_999.25, 1_796_610_001.75):
        record = logging.LogRecord("aiorouter.request", logging.INFO, __file__, 1, "request", None, None)
        record.created, record.msecs = created, int((created - int(created)) * 1000)
        assert ours.format(record) == reference.format(record)


@pytest.mark.usefixtures("restored_logging")
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_hostile_field_or_message_stays_one_bounded_line(log_format: str) -> None:
    """A client's model name with a newline cannot forge a second line, nor can a message with one; a
    megabyte field is cut to FIELD_LIMIT characters, a message to MESSAGE_LIMIT."""
    out = io.StringIO()
    configured(out, log_format=log_format)
    logger = logging.getLogger("aiorouter.request")
    forged = "x\n2026-01-01 00:00:00,000 ERROR fake: injected"
    logger.info("request", extra={"fields": {"model": forged, "key": "k" * 1_000_000, "status": 404}})
    logger.warning("upstream said %s", "line one\r\nline two\u2028three\x00")
    logger.info("m" * 100_000)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert all(len(line) < MESSAGE_LIMIT + 2 * FIELD_LIMIT + 200 for line in lines)
    if log_format == "text":
        assert 'model="x\\n2026-01-01 00:00:00,000 ERROR fake: injected"' in lines[0]
        assert "k" * FIELD_LIMIT + "..." in lines[0] and "status=404" in lines[0]
        assert lines[1].endswith("upstream said line one\\r\\nline two\\u2028three\\x00")
    else:
        record = orjson.loads(lines[0])
        assert record["model"] == forged and record["key"] == "k" * FIELD_LIMIT + "..."
        assert orjson.loads(lines[1])["msg"] == "upstream said line one\r\nline two\u2028three\x00"


class _Label(str):
    pass


@pytest.mark.usefixtures("restored_logging")
def test_text_fields_of_every_type_are_written_as_their_text() -> None:
    """Numbers as they are, a string's subclass and any other object by their ``str``, quoted when that
    text needs it, and a long one cut at FIELD_LIMIT; a line needs no thread, process or source line."""
    out = io.StringIO()
    configured(out, log_format="text")
    fields = {
        "status": 200,
        "ms": 12.5,
        "flag": True,
        "label": _Label("a b"),
        "items": [1, 2],
        "long": "x" * (FIELD_LIMIT + 10),
    }
    logging.getLogger("aiorouter.job").info("job", extra={"fields": fields})
    line = out.getvalue().rstrip()
    assert line.endswith(
        f'status=200 ms=12.5 flag=True label="a b" items="[1, 2]" long={"x" * FIELD_LIMIT}...'
    )
    assert logging.logThreads is False and logging.logProcesses is False and logging._srcfile is None
