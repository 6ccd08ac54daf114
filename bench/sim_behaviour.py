"""How the simulated upstream behaves for one request, chosen through the request's ``model`` name.

Grammar: ``NAME[?OPTION[&OPTION...]]`` where NAME is any model name (``sim`` by convention) and each
OPTION is ``key=value`` or a bare flag. Unknown options are refused with 400 so typos do not go unnoticed.

Timing (milliseconds, floats allowed, all default 0):
  ``latency_ms``  delay before the response starts (status line and headers)
  ``ttft_ms``     further delay before the first content token of a stream
  ``itl_ms``      delay between consecutive tokens of a stream
  A non-stream answer waits for the whole simulated generation: latency + ttft + itl * (tokens - 1).

Content:
  ``tokens=N``    content tokens in the answer (default 16); token ``i`` is the text ``"w{i} "``
  ``tools``       answer with one call of the request's first tool (of ``get_weather`` without one):
                  a function's JSON arguments, or a ``custom`` tool's free-text input, streamed in
                  several pieces
  ``all_fields``  every optional field of OpenAI's response and chunk schemas, and unknown ones
                  (:mod:`bench.sim_full`); so does a request with ``n`` > 1, with ``n`` choices

Failures:
  ``status=S``    answer with HTTP status S and an OpenAI error envelope (after ``latency_ms``)
  ``retry_after=T``  add ``Retry-After: T`` to that error
  ``hang``        accept the request and never answer
  ``cut=N``       stream: close the connection after N content tokens, without ``[DONE]``;
                  non-stream: close the connection without answering
  ``bad_json``    stream: the first content chunk is malformed JSON; non-stream: the body is malformed

Examples: ``sim``, ``sim?tokens=50&itl_ms=0``, ``sim?latency_ms=50``, ``sim?status=503&retry_after=2``,
``sim?tokens=600&itl_ms=50`` (a 30 s stream at 20 tokens/s), ``sim?tools``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

DEFAULT_TOKENS = 16
_FLAGS = frozenset({"hang", "tools", "bad_json", "all_fields"})
_FLOATS = frozenset({"latency_ms", "ttft_ms", "itl_ms", "retry_after"})
_INTS = frozenset({"tokens", "status", "cut"})


class BadBehaviour(ValueError):
    """The model name's options cannot be understood."""


@dataclass(frozen=True, slots=True)
class Behaviour:
    """Everything the upstream needs to know to answer one request."""

    tokens: int = DEFAULT_TOKENS
    latency_s: float = 0.0
    ttft_s: float = 0.0
    itl_s: float = 0.0
    status: int = 200
    retry_after: float | None = None
    hang: bool = False
    cut: int | None = None
    bad_json: bool = False
    tools: bool = False
    all_fields: bool = False

    @property
    def generation_s(self) -> float:
        """Seconds a non-stream answer takes to be generated after the response would start."""
        return self.ttft_s + self.itl_s * max(self.tokens - 1, 0)


def parse_behaviour(model: str) -> Behaviour:
    """Read the options of a model name such as ``sim?tokens=50&ttft_ms=5``."""
    _, _, query = model.partition("?")
    flags: set[str] = set()
    numbers: dict[str, float] = {}
    for key, raw in parse_qsl(query, keep_blank_values=True):
        if key in _FLAGS:
            if raw not in ("", "1", "true"):
                raise BadBehaviour(f"option {key!r} is a flag and takes no value")
            flags.add(key)
        elif key in _FLOATS or key in _INTS:
            numbers[key] = _number(key, raw)
        else:
            raise BadBehaviour(f"unknown simulated-upstream option {key!r}")
    status = int(numbers.get("status", 200))
    if not 100 <= status <= 599:
        raise BadBehaviour(f"status {status} is not an HTTP status")
    return Behaviour(
        tokens=int(numbers.get("tokens", DEFAULT_TOKENS)),
        latency_s=numbers.get("latency_ms", 0.0) / 1000.0,
        ttft_s=numbers.get("ttft_ms", 0.0) / 1000.0,
        itl_s=numbers.get("itl_ms", 0.0) / 1000.0,
        status=status,
        retry_after=numbers.get("retry_after"),
        hang="hang" in flags,
        cut=int(numbers["cut"]) if "cut" in numbers else None,
        bad_json="bad_json" in flags,
        tools="tools" in flags,
        all_fields="all_fields" in flags,
    )


def _number(key: str, raw: str) -> float:
    try:
        value = int(raw) if key in _INTS else float(raw)
    except ValueError as exc:
        raise BadBehaviour(f"option {key!r} needs a number, got {raw!r}") from exc
    if value < 0:
        raise BadBehaviour(f"option {key!r} must not be negative")
    return value
