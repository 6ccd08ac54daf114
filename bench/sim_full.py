"""The simulated upstream's answers with every optional field OpenAI's schemas define, and some no schema
does yet: what ``sim?all_fields`` and ``n > 1`` requests get, to prove that a relay passes them on.

Per chunk: ``service_tier``, ``system_fingerprint``, ``obfuscation`` and an unknown ``x_sim_chunk``; per
choice: ``logprobs`` (content tokens with ``bytes`` and ``top_logprobs``) and an unknown ``x_sim_choice``;
per delta: DeepSeek's ``reasoning_content``, ``annotations`` (on the last token) and an unknown
``x_sim_delta``; usage with ``prompt_tokens_details`` and ``completion_tokens_details``.  Every one of the
``n`` choices says the same.  :func:`full_completion_body` is the non-stream answer: exactly what a client
gets by folding the stream (strings joined, lists extended, the last value of everything else, no
``obfuscation``), so a relay that assembles a body from the stream can be compared with it field by field.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from bench.sim_payloads import new_completion_id, token_text

SERVICE_TIER = "default"
FINGERPRINT = "fp_sim_all"
ANNOTATION = {
    "type": "url_citation",
    "url_citation": {"end_index": 2, "start_index": 0, "url": "https://example.com/", "title": "Example"},
}


def token_logprobs(index: int) -> dict[str, Any]:
    token = token_text(index)
    entry = {"token": token, "logprob": -0.25, "bytes": list(token.encode())}
    return {"content": [{**entry, "top_logprobs": [entry]}], "refusal": None}


def full_usage(prompt_tokens: int, tokens: int, n: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": tokens * n,
        "total_tokens": prompt_tokens + tokens * n,
        "prompt_tokens_details": {"cached_tokens": min(prompt_tokens, 2), "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": tokens * n,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
        "x_sim_usage": "kept",
    }


def _delta(index: int, tokens: int) -> dict[str, Any]:
    delta: dict[str, Any] = {
        "content": token_text(index),
        "reasoning_content": f"r{index} ",
        "x_sim_delta": f"d{index}",
    }
    if index == tokens - 1:
        delta["annotations"] = [ANNOTATION]
    return delta


class FullChunkWriter:
    """The SSE events of a stream with every optional field, for ``n`` identical choices."""

    def __init__(self, model: str, include_usage: bool, n: int, tokens: int) -> None:
        self._head = {
            "id": new_completion_id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "service_tier": SERVICE_TIER,
            "system_fingerprint": FINGERPRINT,
            "x_sim_chunk": {"future": True},
        }
        self._include_usage = include_usage
        self._n = n
        self._tokens = tokens
        self._events = 0

    def _event(self, choices: list[dict[str, Any]], **fields: Any) -> bytes:
        self._events += 1
        chunk = {**self._head, "choices": choices, "obfuscation": "o" * (self._events % 7 + 1), **fields}
        if self._include_usage and "usage" not in chunk:
            chunk["usage"] = None
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _each(self, delta: dict[str, Any], **choice: Any) -> bytes:
        return b"".join(
            self._event([{"index": i, "delta": delta, "logprobs": None, "finish_reason": None, **choice}])
            for i in range(self._n)
        )

    def role(self) -> bytes:
        return self._each({"role": "assistant", "content": "", "refusal": None})

    def content(self, index: int) -> bytes:
        return self._each(_delta(index, self._tokens), logprobs=token_logprobs(index), x_sim_choice=index)

    def finish(self, reason: str) -> bytes:
        return self._each({}, finish_reason=reason)

    def usage(self, prompt_tokens: int, tokens: int) -> bytes:
        return self._event([], usage=full_usage(prompt_tokens, tokens, self._n))


def full_completion_body(model: str, tokens: int, prompt_tokens: int, n: int) -> bytes:
    """The non-stream ``chat.completion`` with every optional field: the stream above, folded."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(token_text(i) for i in range(tokens)),
        "refusal": None,
        "reasoning_content": "".join(f"r{i} " for i in range(tokens)),
        "x_sim_delta": "".join(f"d{i}" for i in range(tokens)),
    }
    if tokens:
        message["annotations"] = [ANNOTATION]
    logprobs = {"content": [token_logprobs(i)["content"][0] for i in range(tokens)], "refusal": None}
    choices = [
        {
            "index": i,
            "message": message,
            "logprobs": logprobs if tokens else None,
            "finish_reason": "stop",
            **({"x_sim_choice": tokens - 1} if tokens else {}),
        }
        for i in range(n)
    ]
    body = {
        "id": new_completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "service_tier": SERVICE_TIER,
        "system_fingerprint": FINGERPRINT,
        "x_sim_chunk": {"future": True},
        "choices": choices,
        "usage": full_usage(prompt_tokens, tokens, n),
    }
    return orjson.dumps(body)
