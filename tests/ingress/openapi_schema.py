"""Check JSON documents against the OpenAI OpenAPI fragments in /work/shared/spec/openai-openapi/.

A small validator for the keywords those fragments use (type, properties, required, enum, items,
anyOf, $ref); no third-party schema library is needed for that.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SPEC_DIR = Path("/work/shared/spec/openai-openapi")

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


@cache
def _schemas(fragment: str) -> dict[str, Any]:
    document = json.loads((SPEC_DIR / fragment).read_text())
    schemas: dict[str, Any] = document["components"]["schemas"]
    return schemas


def schema_errors(fragment: str, schema_name: str, value: Any) -> list[str]:
    """Every violation of ``schema_name`` (from ``fragment``, e.g. ``error.json``) by ``value``."""
    schemas = _schemas(fragment)
    errors: list[str] = []
    _check(schemas[schema_name], value, "$", schemas, errors)
    return errors


def _check(schema: dict[str, Any], value: Any, path: str, schemas: dict[str, Any], errors: list[str]) -> None:
    if "$ref" in schema:
        _check(schemas[schema["$ref"].rsplit("/", 1)[-1]], value, path, schemas, errors)
        return
    if "anyOf" in schema:
        if not any(not _collect(option, value, path, schemas) for option in schema["anyOf"]):
            errors.append(f"{path}: matches no anyOf option")
        return
    kind = schema.get("type")
    if kind is not None:
        is_bool = isinstance(value, bool)
        if not isinstance(value, _TYPES[kind]) or (is_bool and kind in ("integer", "number")):
            errors.append(f"{path}: expected {kind}, got {type(value).__name__}")
            return
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                errors.append(f"{path}.{name}: required")
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                _check(sub, value[name], f"{path}.{name}", schemas, errors)
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            _check(schema["items"], item, f"{path}[{index}]", schemas, errors)


def _collect(schema: dict[str, Any], value: Any, path: str, schemas: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    _check(schema, value, path, schemas, errors)
    return errors
