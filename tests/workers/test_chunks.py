"""The chunk writer and message assembler produce OpenAI-exact objects from deltas."""

from __future__ import annotations

from shared import events
from tests.openai_spec import chunk_violations, completion_violations
from tests.workers.factories import completion_job
from workers.chunks import ChunkWriter, MessageAssembler
from workers.providers.base import Delta, ToolCallDelta, Usage

TOOL_DELTAS = [
    Delta(tool_calls=(ToolCallDelta(0, id="call_a", name="get_weather", arguments=""),)),
    Delta(tool_calls=(ToolCallDelta(0, id="call_a", name="get_weather", arguments='{"loc'),)),
    Delta(tool_calls=(ToolCallDelta(0, arguments='ation": "Paris"}'),)),
    Delta(tool_calls=(ToolCallDelta(1, id="call_b", name="get_time", arguments="{}"),)),
    Delta(finish_reason="tool_calls"),
    Delta(finish_reason="stop"),
]
CUSTOM_DELTAS = [
    Delta(tool_calls=(ToolCallDelta(0, id="call_c", name="run_sql", custom=True),)),
    Delta(tool_calls=(ToolCallDelta(0, arguments="SELECT 1 ", custom=True),)),
    Delta(tool_calls=(ToolCallDelta(0, arguments="FROM t"),)),  # a piece the upstream did not type
    Delta(tool_calls=(ToolCallDelta(1, id="call_f", name="get_time", arguments="{}"),)),
    Delta(finish_reason="tool_calls"),
]


def test_role_only_in_first_delta_and_one_finish_reason() -> None:
    """Role appears once, in the first chunk; a repeated finish_reason from upstream is dropped."""
    writer = ChunkWriter(completion_job())
    deltas = [
        Delta(content="Hel"),
        Delta(content="lo"),
        Delta(finish_reason="stop"),
        Delta(finish_reason="stop"),
    ]
    chunks = [c for c in (writer.chunk(d) for d in deltas) if c is not None]
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": "Hel"},
        {"content": "lo"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "stop"]
    for chunk in chunks:
        assert chunk_violations(chunk) == []
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == "aiorouter/test-model"
        assert chunk["choices"][0]["logprobs"] is None


def test_tool_call_identity_only_in_each_calls_first_delta() -> None:
    """id/type/name appear only in a call's first delta; index appears on every tool-call delta."""
    writer = ChunkWriter(completion_job())
    chunks = [c for c in (writer.chunk(d) for d in TOOL_DELTAS) if c is not None]
    calls = [c["choices"][0]["delta"].get("tool_calls") for c in chunks]
    assert calls[0] == [
        {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    ]
    assert calls[1] == [{"index": 0, "function": {"arguments": '{"loc'}}]
    assert calls[2] == [{"index": 0, "function": {"arguments": 'ation": "Paris"}'}}]
    assert calls[3][0]["id"] == "call_b" and calls[3][0]["index"] == 1
    assert [c["choices"][0]["finish_reason"] for c in chunks].count("tool_calls") == 1
    assert len(chunks) == 5
    assert all(chunk_violations(c) == [] for c in chunks)


def test_custom_call_pieces_keep_the_kind_of_the_calls_first_piece() -> None:
    """A custom call streams as ``type: custom`` with ``custom.name`` in its first piece and
    ``custom.input`` in every later one, even a piece that does not say it is custom; a function call
    beside it keeps the function shape."""
    writer = ChunkWriter(completion_job())
    chunks = [c for c in (writer.chunk(d) for d in CUSTOM_DELTAS) if c is not None]
    assert [c["choices"][0]["delta"].get("tool_calls") for c in chunks[:4]] == [
        [{"index": 0, "id": "call_c", "type": "custom", "custom": {"name": "run_sql", "input": ""}}],
        [{"index": 0, "custom": {"input": "SELECT 1 "}}],
        [{"index": 0, "custom": {"input": "FROM t"}}],
        [
            {
                "index": 1,
                "id": "call_f",
                "type": "function",
                "function": {"name": "get_time", "arguments": "{}"},
            }
        ],
    ]


def test_usage_chunk_has_empty_choices() -> None:
    """The usage chunk carries usage and ``choices: []`` and validates against the schema."""
    writer = ChunkWriter(completion_job())
    chunk = writer.usage_chunk(Usage(3, 4))
    assert chunk["choices"] == []
    assert chunk["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert chunk_violations(chunk) == []


def test_usage_only_delta_makes_no_chunk() -> None:
    """A delta with nothing a client sees produces no chunk at all."""
    assert ChunkWriter(completion_job()).chunk(Delta(usage=Usage(1, 1))) is None


def test_assembled_text_completion_validates() -> None:
    """Content deltas fold into one assistant message with usage and finish_reason."""
    assembler = MessageAssembler(completion_job())
    for delta in (
        Delta(content="Hel"),
        Delta(content="lo", system_fingerprint="fp_1"),
        Delta(finish_reason="length"),
    ):
        assembler.add(delta)
    body = assembler.body(Usage(2, 2))
    assert completion_violations(body) == []
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello", "refusal": None}
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["total_tokens"] == 4
    assert body["system_fingerprint"] == "fp_1"


def test_assembled_tool_calls_join_arguments() -> None:
    """Tool-call pieces fold into complete calls with null content."""
    assembler = MessageAssembler(completion_job())
    for delta in TOOL_DELTAS:
        assembler.add(delta)
    body = assembler.body(Usage(1, 5))
    assert completion_violations(body) == []
    message = body["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
        },
        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    assert body["choices"][0]["finish_reason"] == "tool_calls"


def test_assembled_custom_call_joins_its_input() -> None:
    """A custom call's pieces fold into one call with ``custom.name`` and the whole ``custom.input``, and
    its input counts in the answer's words."""
    assembler = MessageAssembler(completion_job())
    for delta in CUSTOM_DELTAS:
        assembler.add(delta)
    body = assembler.body(Usage(1, 5))
    assert completion_violations(body) == []
    assert body["choices"][0]["message"]["tool_calls"] == [
        {"id": "call_c", "type": "custom", "custom": {"name": "run_sql", "input": "SELECT 1 FROM t"}},
        {"id": "call_f", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    assert assembler.words() == 5  # SELECT 1 FROM t, and {}


def test_sse_bytes_are_the_chunks_serialized() -> None:
    """The byte-template fast path for content deltas gives exactly the bytes of the chunk objects, for
    awkward content (quotes, newlines, unicode, the template's own marker) and a fingerprint arriving
    mid-stream."""
    deltas = [
        Delta(content="Hel"),
        Delta(content='lo "world"\n'),
        Delta(content="é😀\u2028\ue000content\ue000", system_fingerprint="fp_1"),
        Delta(content="</script>", system_fingerprint="fp_1"),
        Delta(content="x", system_fingerprint="fp_2"),
        Delta(refusal="no"),
        *TOOL_DELTAS,
    ]
    job = completion_job()
    fast, reference = ChunkWriter(job), ChunkWriter(job)
    for delta in deltas:
        chunk = reference.chunk(delta)
        assert fast.sse(delta) == (None if chunk is None else events.sse_data(chunk))


class _Piece(str):
    """A streamed piece of text that counts how often text is concatenated with it: each such copy of
    the text so far makes folding a long field quadratic in its length."""

    copies = 0

    def __add__(self, other: str) -> str:
        _Piece.copies += 1
        return str.__add__(self, other)

    def __radd__(self, other: str) -> str:
        _Piece.copies += 1
        return str.__add__(other, self)


def test_assembling_long_streamed_fields_never_copies_the_text_so_far() -> None:
    """A long reasoning text (and a call's own text field) streamed in small pieces is joined once, when
    the body is built: concatenating at each piece copied the text so far every time, and 100,000 pieces
    of 100 characters (10 MB, well within a stream's bounds) held the worker's event loop for minutes."""
    assembler = MessageAssembler(completion_job(stream=False))
    piece = _Piece("r" * 99 + " ")
    _Piece.copies = 0
    for _ in range(1_000):
        assembler.add(
            Delta(
                tool_calls=(ToolCallDelta(0, id="call_a", name="f", extra={"note": piece}),),
                extra={"reasoning_content": piece, "audio": {"transcript": piece}},
            )
        )
    assembler.add(Delta(finish_reason="tool_calls"))
    body = assembler.body(Usage(1, 1))
    assert _Piece.copies == 0
    message = body["choices"][0]["message"]
    assert message["reasoning_content"] == piece * 1_000
    assert message["audio"] == {"transcript": piece * 1_000}
    assert message["tool_calls"][0]["note"] == piece * 1_000
