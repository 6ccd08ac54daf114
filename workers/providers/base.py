"""What a provider adapter is: something that turns a :class:`CompletionJob` into a stream of deltas.

An adapter yields :class:`Delta` objects in order; exactly one of them carries a ``finish_reason`` and
the stream may end with one carrying ``usage``.  Adapters raise only :mod:`shared.errors` classes: the
transport they use (an HTTP client, nothing) stays inside them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from shared.jobs import CompletionJob


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of one tool call; ``id`` and ``name`` may come once or repeated (the first one counts)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)  # not frozen: one is built per upstream chunk, and a frozen init costs twice as much
class Delta:
    content: str | None = None
    refusal: str | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    system_fingerprint: str | None = None

    @property
    def has_message_part(self) -> bool:
        return bool(self.content) or bool(self.refusal) or bool(self.tool_calls)


class ProviderAdapter(Protocol):
    """One upstream provider, shared by every job a worker process runs for it."""

    def stream(self, job: CompletionJob) -> AsyncIterator[Delta]:
        """Deltas of the completion, in order; raises :class:`shared.errors.AIORouterError` on failure."""
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
