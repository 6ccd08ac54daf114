"""The result of a batch line's job, recorded in the round trip that ends the job.

A job that answers records its line for the output file (``status_code`` 200), its tokens counting in
the batch's ``usage``, and one the upstream refused for the error file (its error's status and
envelope).  A retryable failure (the deployment was unavailable and nothing was produced) records
nothing: the batch driver sees the job failed without a result and runs the line again.
"""

from __future__ import annotations

from typing import Any

import orjson

from shared import batch_lines
from shared.batch_lines import LineRef, LineTokens
from shared.errors import AIORouterError
from shared.jobs import CompletionJob
from shared.redis_commands import Command
from workers import settlement


def result_commands(
    job: CompletionJob, *, error: AIORouterError | None, payload: bytes, meta: dict[str, Any]
) -> list[Command]:
    """The command recording ``job``'s line result, or none for a job that is not a batch line."""
    ref = LineRef.from_extra(job.extra)
    if ref is None:
        return []
    if error is None:
        line = batch_lines.response_line(ref, job.request_id, 200, orjson.Fragment(payload))
        prompt, completion, cached, reasoning = settlement.usage_tokens(meta.get("usage"))
        tokens = LineTokens(input=prompt, cached=cached, output=completion, reasoning=reasoning)
        call = batch_lines.record_call(ref, batch_lines.OUTPUT, line, job_id=job.request_id, tokens=tokens)
        return [call.command()]
    if meta.get("retryable"):
        return []
    line = batch_lines.response_line(ref, job.request_id, error.status, error.envelope())
    return [batch_lines.record_call(ref, batch_lines.ERROR, line, job_id=job.request_id).command()]
