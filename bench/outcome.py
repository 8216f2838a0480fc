"""What each part of the benchmark hands back to the runner."""

from __future__ import annotations

from dataclasses import dataclass, field

from proc import Finished
from report import Row


@dataclass
class PartOutcome:
    """Table rows, the subprocesses run (label, how they ended), failures and notes.

    ``tables`` holds whole Markdown tables (with their heading) for reports whose parts
    have tables of their own (``run_strategies.py``); ``run.py`` uses ``rows``.
    """

    rows: list[Row] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    commands: list[tuple[str, Finished]] = field(default_factory=list)
    failures: list[tuple[str, Finished]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, object] = field(default_factory=dict)

    def record(self, label: str, finished: Finished, ok: bool) -> None:
        """Remember a subprocess, and as a failure when it did not produce its results."""
        self.commands.append((label, finished))
        if not ok:
            self.failures.append((label, finished))

    def extend(self, other: PartOutcome) -> None:
        """Append another part's outcome to this one."""
        self.rows += other.rows
        self.tables += other.tables
        self.commands += other.commands
        self.failures += other.failures
        self.notes += other.notes
        self.data.update(other.data)
