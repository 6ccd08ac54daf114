"""What a provider adapter is: something that turns a :class:`CompletionJob` into a stream of deltas.

An adapter yields :class:`Delta` objects in order; exactly one of them carries a ``finish_reason`` and
the stream may end with one carrying ``usage``.  Adapters raise only :mod:`shared.errors` classes: the
transport they use (an HTTP client, nothing) stays inside them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from shared.jobs import CompletionJob


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens a completion used.  ``cached_tokens`` (of the prompt, read from a cache) and
    ``reasoning_tokens`` (of the completion) change what the caller pays; ``extra`` is every other
    field the upstream reported (``prompt_tokens_details``, ``completion_tokens_details``, its own),
    relayed as is."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    extra: Mapping[str, Any] | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.extra:
            out.update((k, v) for k, v in self.extra.items() if k not in out)
        if self.cached_tokens and "prompt_tokens_details" not in out:
            out["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        if self.reasoning_tokens and "completion_tokens_details" not in out:
            out["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return out

    @classmethod
    def from_upstream(cls, usage: Mapping[str, Any]) -> Usage:
        """An OpenAI-shaped usage object (DeepSeek's ``prompt_cache_hit_tokens`` counts as cached)."""
        prompt_details = usage.get("prompt_tokens_details")
        completion_details = usage.get("completion_tokens_details")
        cached = _count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0
        reasoning = (
            _count(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
        )
        extra = {k: v for k, v in usage.items() if k not in _USAGE_OWN}
        return cls(
            token_count(usage["prompt_tokens"]),
            token_count(usage["completion_tokens"]),
            cached or _count(usage.get("prompt_cache_hit_tokens")),
            reasoning,
            extra or None,
        )


_USAGE_OWN = frozenset({"prompt_tokens", "completion_tokens", "total_tokens"})


MAX_TOKEN_COUNT = 2**31 - 1
"""The largest token count an upstream may report: more than any request holds, far from what metrics,
billing and Redis counters can take."""


def token_count(value: Any) -> int:
    """A token count an upstream reported: a whole number from 0 to :data:`MAX_TOKEN_COUNT`, or
    ``ValueError``/``TypeError`` (the adapters' "malformed" errors) for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"token count {value!r} is not a number")
    if not 0 <= value <= MAX_TOKEN_COUNT or value != int(value):  # NaN fails the range test
        raise ValueError(f"token count {value!r} is out of range")
    return int(value)


def _count(value: Any) -> int:
    """An optional detail count (cached, reasoning tokens): 0 unless a whole number within range."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_TOKEN_COUNT:
        return value
    return 0


def text_or_none(value: Any) -> str | None:
    """An upstream's text field (content, refusal, a finish reason, a tool call's name or arguments):
    a string or absent; anything else is malformed (``TypeError``)."""
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"expected a string, got {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of one tool call; ``id`` and ``name`` may come once or repeated (the first one counts).
    ``arguments`` is the call's text streamed in pieces: a function's JSON arguments, or a ``custom``
    tool's free-form input.  The call's first piece tells which it is (``custom``).  ``extra``: the
    piece's other fields (Gemini's ``extra_content`` with its ``thought_signature``, future ones), relayed
    untouched."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    custom: bool = False
    extra: dict[str, Any] | None = None


@dataclass(slots=True)  # not frozen: one is built per upstream chunk, and a frozen init costs twice as much
class Delta:
    """A piece of choice ``index``.  Beyond the fields every adapter fills, an adapter whose upstream sends
    more passes it on untouched: ``extra`` (other fields of the delta: ``reasoning_content``,
    ``annotations``, ``audio``, future ones), ``logprobs`` (the choice's), ``choice_extra`` (other fields of
    the choice) and ``chunk_extra`` (other fields of the chunk: ``service_tier``, ``obfuscation``...)."""

    content: str | None = None
    refusal: str | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    system_fingerprint: str | None = None
    index: int = 0
    extra: dict[str, Any] | None = None
    logprobs: dict[str, Any] | None = None
    choice_extra: dict[str, Any] | None = None
    chunk_extra: dict[str, Any] | None = None

    @property
    def has_message_part(self) -> bool:
        if self.content or self.refusal or self.tool_calls:
            return True
        return self.extra is not None and any(self.extra.values())  # a field that is not null or empty

    @property
    def plain(self) -> bool:
        """Only content, refusal, tool calls or a finish reason of choice 0: nothing to relay beside."""
        return (
            self.index == 0
            and self.extra is None
            and self.logprobs is None
            and self.choice_extra is None
            and self.chunk_extra is None
        )


class ProviderAdapter(Protocol):
    """One upstream provider, shared by every job a worker process runs for it."""

    def stream(self, job: CompletionJob) -> AsyncIterator[Delta]:
        """Deltas of the completion, in order; raises :class:`shared.errors.AIORouterError` on failure."""
        ...

    def streams(self, job: CompletionJob) -> bool:
        """Whether the upstream call of ``job`` streams, so that its first content comes with its first
        token (a JSON call's comes with the whole answer, which is no time to first token)."""
        ...

    async def aclose(self) -> None:
        """Release pooled connections (called once, at worker shutdown)."""
        ...


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat message whose content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def count_prompt_tokens(body: dict[str, Any]) -> int:
    """A cheap prompt size estimate (words of every message), used when the upstream reports none."""
    return sum(len(message_text(m).split()) for m in body.get("messages") or () if isinstance(m, dict))
