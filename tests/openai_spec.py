"""Validate response objects against the OpenAI OpenAPI fragments in ``../shared/spec/openai-openapi/``
(the spec folder beside the repository), for every test package.

Covers the keywords the fragments use: ``$ref``, ``type``, ``nullable``, ``enum``, ``required``,
``properties``, ``items``, ``anyOf``/``oneOf``.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

_BESIDE_REPO = Path(__file__).resolve().parents[2] / "shared" / "spec" / "openai-openapi"
# A clone elsewhere (e.g. a CI check in /tmp) still finds the workplace's spec folder.
SPEC_DIR = next(
    (p for p in (_BESIDE_REPO, Path("/work/shared/spec/openai-openapi")) if p.is_dir()), _BESIDE_REPO
)
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


@cache
def _schemas(fragment: str) -> dict[str, Any]:
    document = json.loads((SPEC_DIR / fragment).read_text())
    schemas: dict[str, Any] = (
        document["components"]["schemas"] if "components" in document else document["schemas"]
    )
    return schemas


def violations(fragment: str, schema_name: str, value: Any) -> list[str]:
    """Every way ``value`` breaks ``schema_name`` of ``fragment`` (empty when it conforms)."""
    schemas = _schemas(fragment)
    errors: list[str] = []
    _check(schemas[schema_name], value, "$", schemas, errors)
    return errors


def chunk_violations(chunk: Any) -> list[str]:
    return violations("chat_completion_stream_response.json", "CreateChatCompletionStreamResponse", chunk)


def completion_violations(body: Any) -> list[str]:
    return violations("chat_completion_response.json", "CreateChatCompletionResponse", body)


def _check(schema: dict[str, Any], value: Any, path: str, schemas: dict[str, Any], errors: list[str]) -> None:
    if value is None and schema.get("nullable"):  # beside a $ref too (the stream chunks' usage)
        return
    if "$ref" in schema:
        _check(schemas[schema["$ref"].rsplit("/", 1)[-1]], value, path, schemas, errors)
        return
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            if all(_errors(option, value, path, schemas) for option in schema[combinator]):
                errors.append(f"{path}: matches no {combinator} option")
            return
    if value is None:
        if not schema.get("nullable") and schema.get("type") != "null":
            errors.append(f"{path}: null is not allowed")
        return
    kind = schema.get("type")
    if kind == "null":
        errors.append(f"{path}: expected null, got {type(value).__name__}")
        return
    if isinstance(kind, str) and kind in _TYPES:
        wrong_bool = isinstance(value, bool) and kind in ("integer", "number")
        if not isinstance(value, _TYPES[kind]) or wrong_bool:
            errors.append(f"{path}: expected {kind}, got {type(value).__name__}")
            return
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, dict):
        errors.extend(f"{path}.{name}: required" for name in schema.get("required", ()) if name not in value)
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                _check(sub, value[name], f"{path}.{name}", schemas, errors)
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            _check(schema["items"], item, f"{path}[{index}]", schemas, errors)


def _errors(schema: dict[str, Any], value: Any, path: str, schemas: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    _check(schema, value, path, schemas, errors)
    return errors
