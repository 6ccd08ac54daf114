"""Build the objects worker tests need."""

from __future__ import annotations

import time
import uuid
from typing import Any

from shared.jobs import CompletionJob


def completion_job(
    text: str = "hello there world",
    *,
    upstream_model: str = "echo",
    stream: bool = True,
    include_usage: bool = False,
    provider: str = "simulated",
    reply_to: str = "aior:reply:workers-test-factory",
    request_id: str | None = None,
    **body: Any,
) -> CompletionJob:
    return CompletionJob(
        request_id=request_id or uuid.uuid4().hex,
        reply_to=reply_to,
        model="aiorouter/test-model",
        provider=provider,
        upstream_model=upstream_model,
        stream=stream,
        include_usage=include_usage,
        body={"model": "aiorouter/test-model", "messages": [{"role": "user", "content": text}], **body},
        created=int(time.time()),
    )


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get current weather",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1},
            },
            "required": ["location"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
    },
}
