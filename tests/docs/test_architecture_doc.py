"""docs/architecture.md stays a true map: every module listed, the Redis key table generated and current."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from shared import keys

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
PACKAGES = ("cli", "ingress", "workers", "shared")


def load_keys_table() -> ModuleType:
    """docs/keys_table.py, the generator (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("keys_table", ROOT / "docs" / "keys_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def modules_on_disk(root: Path) -> set[str]:
    """Every ``.py`` and ``.lua`` file of the packages, minus ``__init__.py`` files that hold no code."""
    found = set()
    for package in PACKAGES:
        for path in (root / package).rglob("*"):
            if path.suffix not in (".py", ".lua") or "__pycache__" in path.parts:
                continue
            if path.name == "__init__.py" and not _has_code(path.read_text()):
                continue
            found.add(path.relative_to(root).as_posix())
    return found


def _has_code(source: str) -> bool:
    body = ast.parse(source).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    return bool(body)


def modules_in_table(document: str) -> list[str]:
    """The first cell of every row of the "Modules" section's table."""
    section = document.split("\n## Modules\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [row.split("`", 2)[1] for row in rows]


def key_definitions(namespace: Mapping[str, Any]) -> set[str]:
    """The names in ``namespace`` that define a Redis key or channel: public functions returning ``str``
    (whose first argument names a part of the key) and public string constants other than ``PREFIX``."""
    names = set()
    for name, value in namespace.items():
        if name.startswith("_"):
            continue
        if inspect.isfunction(value) and value.__module__ == keys.__name__:
            if inspect.signature(value).return_annotation in ("str", str):
                names.add(name)
        elif name.isupper() and isinstance(value, str) and name != "PREFIX":
            names.add(name)
    return names


def undescribed(namespace: Mapping[str, Any], specs: Iterable[keys.KeySpec]) -> set[str]:
    return key_definitions(namespace) - {spec.name for spec in specs}


def test_module_table_lists_every_module_and_nothing_else() -> None:
    """Each module of cli, ingress, workers and shared has one row in the table, and each row a module."""
    listed = modules_in_table(ARCHITECTURE.read_text())
    on_disk = modules_on_disk(ROOT)
    assert sorted(set(listed) - on_disk) == [], "listed in docs/architecture.md, but no such module"
    assert sorted(on_disk - set(listed)) == [], "modules missing from docs/architecture.md's table"
    assert len(listed) == len(set(listed)), "a module is listed twice"


def test_module_check_notices_a_new_module(tmp_path: Path) -> None:
    """A module added to a package, not yet in the table, is found (the check above can fail)."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "shared" / "__init__.py").write_text('"""Only a docstring."""\n')
    (tmp_path / "workers" / "__init__.py").write_text("from workers.x import y\n")
    (tmp_path / "ingress" / "brand_new.py").write_text("")
    (tmp_path / "shared" / "script.lua").write_text("return 1\n")
    assert modules_on_disk(tmp_path) == {"workers/__init__.py", "ingress/brand_new.py", "shared/script.lua"}


def test_key_table_is_generated_from_shared_keys() -> None:
    """The key table in docs/architecture.md is exactly what docs/keys_table.py renders now."""
    table = load_keys_table()
    expected = table.render(keys.described_keys())
    assert table.current_table(ARCHITECTURE.read_text()) == expected, (
        "docs/architecture.md's key table is stale: run .venv/bin/python docs/keys_table.py"
    )


def test_a_changed_description_makes_the_table_stale() -> None:
    """Changing one key's description changes the rendered table (the check above can fail)."""
    table = load_keys_table()
    specs = list(keys.described_keys())
    changed = [dataclasses.replace(specs[0], ttl="1 s"), *specs[1:]]
    assert table.render(changed) != table.render(specs)


def test_every_key_in_shared_keys_is_described() -> None:
    """Each key function and key constant of shared/keys.py has its type, writer, reader and TTL recorded."""
    assert undescribed(vars(keys), keys.described_keys()) == set()
    named = [spec.name for spec in keys.described_keys() if spec.name]
    assert len(named) == len(set(named)), "a key is described twice"


def test_an_undescribed_key_is_noticed() -> None:
    """A key function or constant added without a description is reported (the check above can fail)."""

    def shiny_new_key(thing: str) -> str:
        return f"aior:shiny:{thing}"

    shiny_new_key.__module__ = keys.__name__
    namespace = {**vars(keys), "shiny_new_key": shiny_new_key, "SHINY_SET": "aior:shiny"}
    assert undescribed(namespace, keys.described_keys()) == {"shiny_new_key", "SHINY_SET"}


def test_key_patterns_name_their_arguments() -> None:
    """A described function's pattern is the function called with ``<argument>`` placeholders."""
    by_name = {spec.name: spec for spec in keys.described_keys()}
    assert by_name["usage_daily"].pattern == keys.usage_daily("<account_id>", "<day>")
    assert by_name["CANCEL_CHANNEL"].pattern == keys.CANCEL_CHANNEL
    assert all(spec.writer and spec.reader and spec.ttl and spec.what for spec in by_name.values())
