"""The strategies benchmark's section of RESULTS.md (its own markers, beside run.py's)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from proc import Finished
from report import subprocess_lines

BEGIN = (
    "<!-- bench-strategies:begin (written by bench/run_strategies.py; "
    "edits inside are overwritten) -->"
)
END = "<!-- bench-strategies:end -->"


def strategies_section(
    *,
    tables: Sequence[str],
    command: str,
    date: str,
    machine: Mapping[str, str],
    commands: Sequence[tuple[str, Finished]],
    failures: Sequence[tuple[str, Finished]],
    notes: Sequence[str],
) -> str:
    """The Markdown that goes between this benchmark's markers."""
    parts = [
        BEGIN,
        "## Strategies benchmark",
        "",
        f"- command: `{command}`",
        f"- date: {date}",
        *(f"- {key}: {value}" for key, value in machine.items()),
        "",
    ]
    for table in tables:
        parts += [table, ""]
    parts += ["Notes:", "", *(f"- {note}" for note in notes), ""]
    parts += [*subprocess_lines(commands, failures), END]
    return "\n".join(parts) + "\n"
