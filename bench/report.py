"""The results table (Markdown) and the section of RESULTS.md that the benchmark owns."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from proc import Finished

BEGIN = "<!-- bench:begin (written by bench/run.py; edits inside are overwritten) -->"
END = "<!-- bench:end -->"

HEADERS = (
    "Part",
    "Run",
    "Test acc",
    "Macro-F1",
    "Acc fed / central",
    "s / round",
    "s / round, rounds 2+",
    "Peak RSS GiB tree (main)",
    "Wall s",
    "Status",
)


@dataclass
class Row:
    """One line of the results table; every cell is already formatted."""

    part: str
    run: str
    accuracy: str = ""
    macro_f1: str = ""
    vs_central: str = ""
    per_round: str = ""
    per_round_warm: str = ""
    peak: str = ""
    wall: str = ""
    status: str = "ok"


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or an empty cell for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def status(finished: Finished, ok: bool) -> str:
    """``ok``, or why not (return code, timeout, or missing outputs)."""
    if ok:
        return "ok"
    if finished.returncode == -9:
        return "FAILED: timed out"
    if finished.returncode != 0:
        return f"FAILED: exit {finished.returncode}"
    return "FAILED: no results written"


def markdown_grid(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Headers and rows of already formatted cells as a GitHub Markdown table."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    for cells in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as a GitHub Markdown table."""
    return markdown_grid(HEADERS, [[getattr(row, f.name) for f in fields(row)] for row in rows])


def results_section(
    *,
    table: str,
    command: str,
    date: str,
    machine: Mapping[str, str],
    commands: Sequence[tuple[str, Finished]],
    failures: Sequence[tuple[str, Finished]],
    notes: Sequence[str],
) -> str:
    """The Markdown that goes between the markers of RESULTS.md."""
    parts = [
        BEGIN,
        "## Latest benchmark",
        "",
        f"- command: `{command}`",
        f"- date: {date}",
        *(f"- {key}: {value}" for key, value in machine.items()),
        "",
        table,
        "",
        "Notes:",
        "",
        *(f"- {note}" for note in notes),
        "",
    ]
    parts += [*subprocess_lines(commands, failures), END]
    return "\n".join(parts) + "\n"


def subprocess_lines(
    commands: Sequence[tuple[str, Finished]], failures: Sequence[tuple[str, Finished]]
) -> list[str]:
    """Markdown lines: each failure with its command and log tail, then every command run."""
    lines: list[str] = []
    if failures:
        lines += ["### Failures", ""]
        for label, finished in failures:
            lines += [
                f"**{label}** (exit {finished.returncode}): `{finished.shell}`",
                "",
                "```text",
                finished.log_tail(),
                "```",
                "",
            ]
    lines += ["<details><summary>Subprocesses run</summary>", ""]
    lines += [
        f"- {label} ({finished.wall_s:.0f} s): `{finished.shell}`" for label, finished in commands
    ]
    lines += ["", "</details>"]
    return lines


def write_section(path: Path, section: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the section of ``path`` between ``begin`` and ``end`` (append it, or create
    the file); other sections of the file are left as they are."""
    text = path.read_text() if path.is_file() else "# fractofl benchmark results\n\n"
    start = text.find(begin)
    stop = text.find(end, start + 1) if start != -1 else -1
    if start != -1 and stop > start:
        text = text[:start] + section.rstrip("\n") + text[stop + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")
