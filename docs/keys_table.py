"""Render the Redis key table of docs/architecture.md from the descriptions in shared/keys.py.

    .venv/bin/python docs/keys_table.py     # rewrite the table in docs/architecture.md

``tests/docs/test_architecture_doc.py`` fails when the committed table differs from what this renders.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from shared.keys import KeySpec, described_keys

ARCHITECTURE = Path(__file__).resolve().parent / "architecture.md"
BEGIN = "<!-- BEGIN keys table: generated from shared/keys.py by docs/keys_table.py; do not edit by hand -->"
END = "<!-- END keys table -->"
HEADER = (
    "| key or channel | in `shared/keys.py` | type | what it is | written by | read by | TTL |\n"
    "| --- | --- | --- | --- | --- | --- | --- |"
)


def render(specs: Iterable[KeySpec]) -> str:
    """The markdown table, one row per key or channel."""
    rows = [HEADER]
    for spec in specs:
        pattern = ", ".join(f"`{part}`" for part in spec.pattern.split(", "))
        cells = [pattern, _definition(spec), spec.type, spec.what, spec.writer, spec.reader, spec.ttl]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows)


def current_table(document: str) -> str:
    """The table between the markers of ``document``."""
    start = document.index(BEGIN) + len(BEGIN)
    return document[start : document.index(END, start)].strip("\n")


def with_table(document: str, table: str) -> str:
    """``document`` with ``table`` between its markers."""
    start = document.index(BEGIN) + len(BEGIN)
    end = document.index(END, start)
    return f"{document[:start]}\n{table}\n{document[end:]}"


def _definition(spec: KeySpec) -> str:
    if not spec.name:
        return "rq's"
    return f"`{spec.name}`" if spec.name.isupper() else f"`{spec.name}()`"


def main() -> int:
    document = ARCHITECTURE.read_text()
    updated = with_table(document, render(described_keys()))
    if updated != document:
        ARCHITECTURE.write_text(updated)
        print(f"rewrote the key table in {ARCHITECTURE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
