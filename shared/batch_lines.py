"""Batch lines as both sides see them: what a batch line's job carries, and its result line.

The batch driver puts a :class:`LineRef` in ``CompletionJob.extra[EXTRA_KEY]``; the worker that runs the
job records its result with :func:`record_call` in the round trip that ends the job.  A result is ``O``
(the output file) or ``E`` (the error file) followed by the output line of OpenAI's batch format::

    {"id": "batch_req_…", "custom_id": …, "response": {"status_code", "request_id", "body"} | null,
     "error": {"code", "message"} | null}

:data:`RESULT_SCRIPT` keeps the first result of a line and drops any later one, so a line that ran twice
(its worker was taken for dead) still appears once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson

from shared import keys
from shared.lua import LuaScript, ScriptCall

EXTRA_KEY: Final = "batch_line"
OUTPUT: Final = b"O"
ERROR: Final = b"E"
RESULT_SCRIPT = LuaScript.load("batch_result")


@dataclass(frozen=True, slots=True)
class LineRef:
    batch_id: str
    line: int  # 0-based line number in the input file
    custom_id: str

    def to_wire(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "line": self.line, "custom_id": self.custom_id}

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> LineRef | None:
        data = extra.get(EXTRA_KEY)
        if not isinstance(data, dict):
            return None
        try:
            return cls(str(data["batch_id"]), int(data["line"]), str(data["custom_id"]))
        except (KeyError, TypeError, ValueError):
            return None


def response_line(ref: LineRef, request_id: str, status_code: int, body: Any) -> bytes:
    """A line the upstream answered (``status_code`` 200 for the output file, else the error file)."""
    return orjson.dumps(
        {
            "id": f"batch_req_{request_id}",
            "custom_id": ref.custom_id,
            "response": {"status_code": status_code, "request_id": request_id, "body": body},
            "error": None,
        }
    )


def error_line(ref: LineRef, code: str, message: str) -> bytes:
    """A line that did not get an answer (expired, cancelled, out of credit, failed every attempt)."""
    return orjson.dumps(
        {
            "id": f"batch_req_{ref.batch_id}_{ref.line}",
            "custom_id": ref.custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
    )


@dataclass(frozen=True, slots=True)
class LineTokens:
    """The tokens of a line's answer, added to its batch's ``usage`` when the answer is recorded."""

    input: int
    cached: int
    output: int
    reasoning: int


def record_call(
    ref: LineRef, kind: bytes, line: bytes, *, job_id: str | None = None, tokens: LineTokens | None = None
) -> ScriptCall:
    """Record ``line`` as the result of ``ref`` unless it already has one; with ``job_id`` (a worker's
    result), only if the line's attempt in flight is that job's (not one the driver gave up on as lost,
    nor one of a batch already finalized).  ``tokens`` (a worker's answer, so with ``job_id``) count in
    the batch's usage with the result, once."""
    script_keys = [keys.batch_done(ref.batch_id), keys.batch_results(ref.batch_id)]
    args: list[str | int | bytes] = [ref.line, kind + line]
    if job_id is not None:
        script_keys.append(keys.batch_inflight(ref.batch_id))
        args.append(job_id)
        if tokens is not None:
            script_keys.append(keys.batch_record(ref.batch_id))
            args.extend([tokens.input, tokens.cached, tokens.output, tokens.reasoning])
    return ScriptCall(RESULT_SCRIPT, script_keys, args)
