"""Example values that validate against a JSON schema: the simulated provider's tool arguments and
``json_schema`` answers.

Strings are filled with a given text; objects get every listed property, arrays ``minItems`` items,
numbers their ``minimum``.  The work per example is bounded whatever the schema asks: at most
:data:`MAX_SCHEMA_DEPTH` nested schemas are followed, at most :data:`MAX_EXAMPLE_VALUES` values are built
and the example's JSON stays under about :data:`MAX_EXAMPLE_BYTES`; a schema that needs more (nested
``minItems``, a ``$ref`` fanning out to itself) is refused before the work is done.

A schema this cannot read (a ``minimum`` that is not a number or, for an integer, is past 64 bits, an
``anyOf`` that is not an array, ...), or that needs more than the bounds, is the caller's mistake:
:class:`~shared.errors.UpstreamBadRequest`, the 400 a real provider answers, never a crash.
"""

from __future__ import annotations

import math
from typing import Any, Final

import orjson

from shared.errors import UpstreamBadRequest

MAX_SCHEMA_DEPTH: Final = 8  # nested schemas followed (``$ref``, combinators, properties, items)
MAX_EXAMPLE_VALUES: Final = 10_000  # values (strings, numbers, array items, properties...) in one example
MAX_EXAMPLE_BYTES: Final = 1024 * 1024  # the example's JSON, roughly: strings, names and constants
_COMBINATORS: Final = ("anyOf", "oneOf", "allOf")
_INT64: Final = 2**63


def example_value(schema: Any, text: str) -> Any:
    """A value that validates against ``schema`` (a reasonable one); strings are ``text``."""
    return _Example(schema, text).of(schema, 0)


class _Example:
    __slots__ = ("bytes_left", "root", "text", "values_left")

    def __init__(self, root: Any, text: str) -> None:
        self.root = root
        self.text = text
        self.values_left = MAX_EXAMPLE_VALUES
        self.bytes_left = MAX_EXAMPLE_BYTES

    def of(self, schema: Any, depth: int) -> Any:
        self._spend(1, 8)
        if not isinstance(schema, dict) or depth > MAX_SCHEMA_DEPTH:
            return self._text()
        if isinstance(schema.get("$ref"), str):
            return self.of(self._resolve(schema["$ref"]), depth + 1)
        if "const" in schema:
            return self._constant(schema["const"])
        enum = schema.get("enum")
        if enum is not None:
            if not isinstance(enum, list):
                raise _unreadable("'enum' must be an array")
            if enum:
                return self._constant(enum[0])
        for combinator in _COMBINATORS:
            options = schema.get(combinator)
            if options is not None:
                if not isinstance(options, list):
                    raise _unreadable(f"'{combinator}' must be an array")
                if options:
                    return self.of(options[0], depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind == "object" or (kind is None and "properties" in schema):
            properties = schema.get("properties") or {}
            if not isinstance(properties, dict):
                raise _unreadable("'properties' must be an object")
            self._spend(0, sum(len(name) + 4 for name in properties))
            return {name: self.of(sub, depth + 1) for name, sub in properties.items()}
        if kind == "array":
            count = max(1, _count(schema, "minItems"))
            self._spend(count, 0)  # refuse an impossible count before building anything
            self.values_left += count
            return [self.of(schema.get("items") or {}, depth + 1) for _ in range(count)]
        if kind == "integer":
            value = math.ceil(_minimum(schema, 1))
            if not -_INT64 <= value < _INT64:  # JSON encoders (orjson, the client's) stop at 64 bits
                raise _unreadable("an integer's 'minimum' must be within 64 bits")
            return value
        if kind == "number":
            return float(_minimum(schema, 1.0))
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return self._text()

    def _text(self) -> str:
        self._spend(0, len(self.text))
        return self.text

    def _constant(self, value: Any) -> Any:
        self._spend(0, len(orjson.dumps(value)))
        return value

    def _spend(self, values: int, size: int) -> None:
        self.values_left -= values
        self.bytes_left -= size
        if self.values_left < 0 or self.bytes_left < 0:
            raise UpstreamBadRequest(
                "The simulated provider will not build an example this large for this JSON schema "
                f"(limits: {MAX_EXAMPLE_VALUES} values, {MAX_EXAMPLE_BYTES} bytes)."
            )

    def _resolve(self, ref: str) -> Any:
        node = self.root
        pointer = ref.removeprefix("#").removeprefix("/")
        for part in pointer.split("/") if pointer else ():
            if not isinstance(node, dict) or part not in node:
                return {}
            node = node[part]
        return node


def _count(schema: dict[str, Any], key: str) -> int:
    value = schema.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _unreadable(f"'{key}' must be a non-negative integer")
    return value


def _minimum(schema: dict[str, Any], default: float) -> float:
    value = schema.get("minimum", default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _unreadable("'minimum' must be a finite number")
    return value


def _unreadable(problem: str) -> UpstreamBadRequest:
    return UpstreamBadRequest(f"The simulated provider cannot read this JSON schema: {problem}.")
