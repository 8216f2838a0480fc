"""Markdown for RESULTS.md: table cells, tables, and each part's section between its markers."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from outcome import PartOutcome
from proc import Finished

NEW_RESULTS_FILE = "# fractofl benchmark results\n\n"

ROW_HEADERS = {
    "run": "Run",
    "accuracy": "Test acc",
    "macro_f1": "Macro-F1",
    "vs_central": "Acc fed / central",
    "per_round": "s / round",
    "per_round_warm": "s / round, rounds 2+",
    "peak": "Peak RSS GiB tree (main)",
    "wall": "Wall s",
    "status": "Status",
}


@dataclass
class Row:
    """One line of a run table (parts accuracy, cost, scale); every cell already formatted."""

    run: str
    accuracy: str = ""
    macro_f1: str = ""
    vs_central: str = ""
    per_round: str = ""
    per_round_warm: str = ""
    peak: str = ""
    wall: str = ""
    status: str = "ok"


@dataclass(frozen=True)
class Header:
    """What every section of one invocation states above its tables."""

    command: str
    date: str
    mode: str
    work: Path
    machine: Mapping[str, str]


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
    """The rows as a Markdown table, without the columns that are empty in every row."""
    names = [f.name for f in fields(Row) if any(getattr(row, f.name) for row in rows)]
    return markdown_grid(
        [ROW_HEADERS[name] for name in names],
        [[getattr(row, name) for name in names] for row in rows],
    )


def begin_marker(part: str) -> str:
    """The line that opens ``part``'s section of RESULTS.md."""
    return f"<!-- bench-{part}:begin (written by bench/run.py; edits inside are overwritten) -->"


def end_marker(part: str) -> str:
    """The line that closes ``part``'s section of RESULTS.md."""
    return f"<!-- bench-{part}:end -->"


def part_section(part: str, title: str, header: Header, outcome: PartOutcome) -> str:
    """The Markdown of one part's section, markers included."""
    lines = [
        begin_marker(part),
        f"## {title}",
        "",
        f"- command: `{header.command}` (part `{part}`)",
        f"- date: {header.date}",
        f"- mode: {header.mode}; work folder {header.work}",
        *(f"- {key}: {value}" for key, value in header.machine.items()),
        "",
    ]
    for table in outcome.tables:
        lines += [table, ""]
    if outcome.notes:
        lines += ["Notes:", "", *(f"- {note}" for note in outcome.notes), ""]
    lines += [*subprocess_lines(outcome.commands, outcome.failures), end_marker(part)]
    return "\n".join(lines) + "\n"


def stopped_table(reason: str, traceback_tail: str = "") -> str:
    """What a part's section shows in place of its results when the part stopped."""
    stopped = f"**The part stopped**: {reason}"
    return f"{stopped}\n\n```text\n{traceback_tail}\n```" if traceback_tail else stopped


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
    if commands:
        lines += ["<details><summary>Subprocesses run</summary>", ""]
        lines += [
            f"- {label} ({finished.wall_s:.0f} s): `{finished.shell}`"
            for label, finished in commands
        ]
        lines += ["", "</details>"]
    return lines


def write_section(path: Path, part: str, section: str) -> None:
    """Replace ``part``'s section of ``path`` (found by the start of its begin marker, so a
    change of the marker's comment does not orphan it), or append it, or create the file;
    other sections are left as they are."""
    text = path.read_text() if path.is_file() else NEW_RESULTS_FILE
    start = text.find(f"<!-- bench-{part}:begin")
    end = end_marker(part)
    stop = text.find(end, start + 1) if start != -1 else -1
    if start != -1 and stop > start:
        text = text[:start] + section.rstrip("\n") + text[stop + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")
