"""Deltas in, OpenAI-exact response objects out.

:class:`ChunkWriter` makes ``chat.completion.chunk`` objects for a stream: per choice, ``role`` only in
its first delta, a tool call's ``id``/``type``/``function.name`` (``custom.name`` for a call of a custom
tool) only in that call's first delta (``index`` on every one) and exactly one ``finish_reason``; then a
final usage chunk with ``choices: []``.  :class:`MessageAssembler` folds the same deltas into one
``chat.completion`` body.  A call keeps the kind its first piece gave it: ``function.arguments`` or
``custom.input`` carry its later pieces.

Everything an upstream sent beyond that (a delta's ``reasoning_content``, ``annotations`` or unknown
fields, a tool call's ``extra_content``, a choice's ``logprobs``, a chunk's ``service_tier``...) is
relayed unchanged.  The router owns only ``id`` (``chatcmpl-<request id>``, the id the caller can
quote), ``object``, ``created`` and ``model`` (the model id the caller asked for, not the upstream's
name for it).  Assembling a body
concatenates what streams in pieces (strings joined, lists extended, objects merged field by field);
other values keep their last one; ``obfuscation``, which only pads stream chunks, is left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared import events
from shared.jobs import CompletionJob
from workers.providers.base import Delta, ToolCallDelta, Usage

STREAM_ONLY_FIELDS = frozenset({"obfuscation"})


def completion_id(job: CompletionJob) -> str:
    return f"chatcmpl-{job.request_id}"


@dataclass(slots=True)
class _StreamedChoice:
    role_sent: bool = False
    calls_started: dict[int, bool] = field(default_factory=dict)  # each started call: is it custom?
    finish_reason: str | None = None


class ChunkWriter:
    def __init__(self, job: CompletionJob) -> None:
        self._head: dict[str, Any] = {
            "id": completion_id(job),
            "object": "chat.completion.chunk",
            "created": job.created,
            "model": job.model,
        }
        if job.include_usage:  # as OpenAI: every chunk has the field, null until the usage chunk
            self._head["usage"] = None
        self._first = _StreamedChoice()
        self._choices: dict[int, _StreamedChoice] = {0: self._first}
        self._content_sse: tuple[bytes, bytes] | None = None  # SSE bytes around a content delta's JSON
        self._usage_extra: dict[str, Any] | None = None

    @property
    def finish_reason(self) -> str | None:
        """The first choice's finish reason (what rq records), once it has one."""
        return self._first.finish_reason

    @property
    def finished(self) -> bool:
        """Every choice the upstream answered has its finish reason (see :func:`all_finished`)."""
        return all_finished(self._choices.values())

    def set_fingerprint(self, fingerprint: str | None) -> None:
        if fingerprint and "system_fingerprint" not in self._head:
            self._head["system_fingerprint"] = fingerprint
            self._content_sse = None

    def note_usage(self, delta: Delta) -> None:
        """Remember the chunk fields that came with the upstream's usage, for the usage chunk."""
        if delta.chunk_extra:
            self._usage_extra = delta.chunk_extra

    def sse(self, delta: Delta) -> bytes | None:
        """:meth:`chunk` as its ``data: ...`` SSE event, or None.  A delta of content only, after the
        first, fills a byte template instead (the same bytes, a fifth of the CPU: no dict, one string
        serialized)."""
        content = delta.content
        if (
            content
            and self._first.role_sent
            and delta.finish_reason is None
            and not delta.refusal
            and not delta.tool_calls
            and delta.plain
            and (delta.system_fingerprint is None or "system_fingerprint" in self._head)
        ):
            template = self._content_sse or self._content_template()
            return template[0] + orjson.dumps(content) + template[1]
        chunk = self.chunk(delta)
        return None if chunk is None else events.sse_data(chunk)

    def _content_template(self) -> tuple[bytes, bytes]:
        choice = {"index": 0, "delta": {"content": _MARK}, "logprobs": None, "finish_reason": None}
        before, after = events.sse_data({**self._head, "choices": [choice]}).split(_MARK_JSON)
        self._content_sse = (before, after)
        return self._content_sse

    def chunk(self, delta: Delta) -> dict[str, Any] | None:
        """The chunk for ``delta``, or None when it adds nothing a client would see."""
        self.set_fingerprint(delta.system_fingerprint)
        state = self._choices.get(delta.index)
        if state is None:
            state = self._choices[delta.index] = _StreamedChoice()
        finish_reason = delta.finish_reason if state.finish_reason is None else None
        if not delta.has_message_part and finish_reason is None and delta.logprobs is None:
            return None
        body: dict[str, Any] = {}
        if not state.role_sent:
            body["role"] = "assistant"
            state.role_sent = True
        if delta.content:
            body["content"] = delta.content
        if delta.refusal:
            body["refusal"] = delta.refusal
        if delta.tool_calls:
            body["tool_calls"] = [self._tool_call(state, call) for call in delta.tool_calls]
        if delta.extra:
            for name, value in delta.extra.items():
                body.setdefault(name, value)
        if finish_reason is not None:
            state.finish_reason = finish_reason
        choice = {
            "index": delta.index,
            "delta": body,
            "logprobs": delta.logprobs,
            "finish_reason": finish_reason,
        }
        if delta.choice_extra:
            for name, value in delta.choice_extra.items():
                choice.setdefault(name, value)
        chunk = {**self._head, "choices": [choice]}
        if delta.chunk_extra:
            for name, value in delta.chunk_extra.items():
                chunk.setdefault(name, value)
        return chunk

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        chunk = {**self._head, "choices": [], "usage": usage.to_dict()}
        if self._usage_extra:
            for name, value in self._usage_extra.items():
                chunk.setdefault(name, value)
        return chunk

    @staticmethod
    def _tool_call(state: _StreamedChoice, call: ToolCallDelta) -> dict[str, Any]:
        custom = state.calls_started.get(call.index)
        piece: dict[str, Any]
        if custom is not None:
            kind, text = _CALL_FIELDS[custom]
            piece = {"index": call.index, kind: {text: call.arguments}}
        else:
            state.calls_started[call.index] = call.custom
            kind, text = _CALL_FIELDS[call.custom]
            piece = {
                "index": call.index,
                "id": call.id or f"call_{call.index}",
                "type": kind,
                kind: {"name": call.name or "", text: call.arguments},
            }
        if call.extra:
            for name, value in call.extra.items():
                piece.setdefault(name, value)
        return piece


_CALL_FIELDS = {False: ("function", "arguments"), True: ("custom", "input")}
"""A tool call's ``type`` (the object holding its name and text) and its text's field, by whether it
calls a custom tool."""


_MARK = "\ue000content\ue000"  # a private-use string no serializer escapes
_MARK_JSON = orjson.dumps(_MARK)


@dataclass(slots=True)
class _AssembledCall:
    """One tool call folded from its pieces: of a function (``arguments``) or a custom tool (``input``)."""

    id: str | None
    name: str | None
    custom: bool
    text: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # the pieces' other fields, merged

    def add(self, call: ToolCallDelta) -> None:
        self.id = self.id or call.id
        self.name = self.name or call.name
        if call.arguments:
            self.text.append(call.arguments)
        if call.extra:
            merge_into(self.extra, call.extra)

    def body(self, index: int) -> dict[str, Any]:
        kind, text = _CALL_FIELDS[self.custom]
        call = {
            "id": self.id or f"call_{index}",
            "type": kind,
            kind: {"name": self.name or "", text: self.whole_text},
        }
        for name, value in self.extra.items():
            call.setdefault(name, folded(value))
        return call

    @property
    def whole_text(self) -> str:
        return "".join(self.text)


@dataclass(slots=True)
class _AssembledChoice:
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    calls: dict[int, _AssembledCall] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    logprobs: dict[str, Any] | None = None
    choice_extra: dict[str, Any] = field(default_factory=dict)
    finish_reason: str | None = None

    def add(self, delta: Delta) -> None:
        if delta.content:
            self.content.append(delta.content)
        if delta.refusal:
            self.refusal.append(delta.refusal)
        for call in delta.tool_calls:
            assembled = self.calls.get(call.index)
            if assembled is None:
                assembled = self.calls[call.index] = _AssembledCall(call.id, call.name, call.custom)
            assembled.add(call)
        if delta.extra:
            merge_into(self.extra, delta.extra)
        if delta.logprobs is not None:
            self.logprobs = merge_into(self.logprobs or {}, delta.logprobs)
        if delta.choice_extra:
            self.choice_extra.update(delta.choice_extra)
        if delta.finish_reason and self.finish_reason is None:
            self.finish_reason = delta.finish_reason

    def words(self) -> int:
        texts = [*self.content, *self.refusal, *(call.whole_text for call in self.calls.values())]
        return sum(len(text.split()) for text in texts)

    def body(self, index: int) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self.content) if self.content or not self.calls else None,
            "refusal": "".join(self.refusal) if self.refusal else None,
        }
        if self.calls:
            message["tool_calls"] = [call.body(number) for number, call in sorted(self.calls.items())]
        for name, value in self.extra.items():
            message.setdefault(name, folded(value))
        choice = {
            "index": index,
            "message": message,
            "logprobs": folded(self.logprobs),
            "finish_reason": self.finish_reason or "stop",
        }
        for name, value in self.choice_extra.items():
            choice.setdefault(name, value)
        return choice


class MessageAssembler:
    """Collects deltas into the single ``chat.completion`` body of a non-stream request."""

    def __init__(self, job: CompletionJob) -> None:
        self._job = job
        self._choices: dict[int, _AssembledChoice] = {0: _AssembledChoice()}
        self._fingerprint: str | None = None
        self._chunk_extra: dict[str, Any] = {}

    @property
    def finish_reason(self) -> str | None:
        return self._choices[0].finish_reason

    def words(self) -> int:
        """Words of the answer's text (content, refusals, tool arguments): its size in tokens, roughly."""
        return sum(choice.words() for choice in self._choices.values())

    @property
    def finished(self) -> bool:
        """Every choice the upstream answered has its finish reason (see :func:`all_finished`)."""
        return all_finished(self._choices.values())

    def add(self, delta: Delta) -> None:
        choice = self._choices.get(delta.index)
        if choice is None:
            choice = self._choices[delta.index] = _AssembledChoice()
        choice.add(delta)
        self._fingerprint = self._fingerprint or delta.system_fingerprint
        if delta.chunk_extra:
            self._chunk_extra.update(
                (k, v) for k, v in delta.chunk_extra.items() if k not in STREAM_ONLY_FIELDS
            )

    def body(self, usage: Usage) -> dict[str, Any]:
        response: dict[str, Any] = {
            "id": completion_id(self._job),
            "object": "chat.completion",
            "created": self._job.created,
            "model": self._job.model,
            "choices": [choice.body(index) for index, choice in sorted(self._choices.items())],
            "usage": usage.to_dict(),
        }
        if self._fingerprint:
            response["system_fingerprint"] = self._fingerprint
        for name, value in self._chunk_extra.items():
            response.setdefault(name, value)
        return response


def all_finished(choices: Iterable[_StreamedChoice | _AssembledChoice]) -> bool:
    """Whether every choice an answer holds (the first one always) ended with its finish reason.  A choice
    the upstream never started is not waited for: an OpenAI-compatible server that ignores ``n`` answers
    one choice, and that answer is given as it is rather than failed; a choice it started and did not
    finish is a cut answer."""
    return all(choice.finish_reason is not None for choice in choices)


class _StreamedText:
    """A string that came in pieces, kept as its pieces until :func:`folded` joins them once: joining at
    each piece would copy the text so far every time, work growing with the square of its length."""

    __slots__ = ("pieces",)

    def __init__(self, first: str, second: str) -> None:
        self.pieces = [first, second]


def merge_into(target: dict[str, Any], piece: dict[str, Any]) -> dict[str, Any]:
    """Fold one streamed piece of an object into ``target``: strings are joined (by :func:`folded`),
    lists extended, objects merged field by field, null adds nothing, anything else replaces.  Returns
    ``target``."""
    for name, value in piece.items():
        held = target.get(name)
        if value is None:
            target.setdefault(name, None)
        elif held is None:
            target[name] = (
                dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else value
            )
        elif isinstance(value, str) and isinstance(held, _StreamedText):
            held.pieces.append(value)
        elif isinstance(held, str) and isinstance(value, str):
            target[name] = _StreamedText(held, value)
        elif isinstance(held, list) and isinstance(value, list):
            held.extend(value)
        elif isinstance(held, dict) and isinstance(value, dict):
            merge_into(held, value)
        else:
            target[name] = value
    return target


def folded(value: Any) -> Any:
    """A value :func:`merge_into` folded, as it reads: the pieces of its strings joined (in its objects:
    the items of a list are kept as they came, never merged)."""
    if isinstance(value, _StreamedText):
        return "".join(value.pieces)
    if isinstance(value, dict):
        return {name: folded(field) for name, field in value.items()}
    return value
