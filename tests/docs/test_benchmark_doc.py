"""docs/benchmark.md and README.md show the latest committed benchmark run, not an older or hand-edited
copy: the benchmark page its machine line and targets, the README its comparison with the relay."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BEGIN = "<!-- copied from bench/results/latest.md"
END = "<!-- end of the copy -->"


def latest_targets(text: str) -> list[str]:
    """The machine line and the "Targets" table of a ``bench/results/latest.md``."""
    machine = next(line for line in text.splitlines() if line.startswith("Machine:"))
    return [machine, *table_after(text, "## Targets")]


def latest_relay_comparison(text: str) -> list[str]:
    """The machine line and the table "Against the pass-through relay" of a ``bench/results/latest.md``."""
    machine = next(line for line in text.splitlines() if line.startswith("Machine:"))
    return [machine, *table_after(text, "## Against the pass-through relay")]


def table_after(text: str, heading: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(next(line for line in lines if line.startswith(heading)))
    table_start = next(i for i in range(start, len(lines)) if lines[i].startswith("|"))
    table_end = next((i for i in range(table_start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[table_start:table_end]


def documented_copy(text: str) -> list[str]:
    """The non-blank lines between the copy markers of docs/benchmark.md."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(BEGIN))
    end = lines.index(END)
    return [line for line in lines[start + 1 : end] if line.strip()]


def test_benchmark_doc_shows_the_latest_targets_table() -> None:
    """docs/benchmark.md's machine line and targets table are exactly bench/results/latest.md's."""
    latest = latest_targets((ROOT / "bench/results/latest.md").read_text())
    assert documented_copy((ROOT / "docs/benchmark.md").read_text()) == latest


def test_readme_shows_the_latest_comparison_with_the_relay() -> None:
    """README.md's machine line and relay comparison are exactly bench/results/latest.md's."""
    latest = latest_relay_comparison((ROOT / "bench/results/latest.md").read_text())
    assert documented_copy((ROOT / "README.md").read_text()) == latest


def test_a_stale_copy_is_told_apart() -> None:
    """A figure changed in the latest run makes the documented copy differ (the check can fail)."""
    latest = (ROOT / "bench/results/latest.md").read_text()
    changed = latest.replace(" req/s", " req/s, rerun", 1)
    assert changed != latest
    assert documented_copy((ROOT / "docs/benchmark.md").read_text()) != latest_targets(changed)
