"""What a part hands back to the driver: its tables, notes, subprocesses and data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proc import Finished, run_logged


class StepFailed(RuntimeError):
    """A step without which the part cannot go on failed; the message says which, how,
    and ends with the tail of its log. ``outcome`` holds what the part recorded so far."""

    def __init__(self, message: str, outcome: PartOutcome) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass
class PartOutcome:
    """One part's results.

    ``tables`` are Markdown blocks (a table, perhaps with a sentence before or after it),
    ``commands`` every subprocess run (label, how it ended), ``failures`` those that did
    not produce their results, ``data`` what goes into ``results.json``.
    """

    tables: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    commands: list[tuple[str, Finished]] = field(default_factory=list)
    failures: list[tuple[str, Finished]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def record(self, label: str, finished: Finished, ok: bool) -> None:
        """Remember a subprocess (and as a failure when it did not produce its results);
        say on the console how it ended."""
        self.commands.append((label, finished))
        if not ok:
            self.failures.append((label, finished))
        print(f"    {label}: exit {finished.returncode} in {finished.wall_s:.0f} s", flush=True)

    def run_step(
        self,
        label: str,
        command: Sequence[str],
        log_path: Path,
        timeout_s: float,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Finished:
        """Run a subprocess the part needs to succeed; record it; raise :class:`StepFailed`
        when it exits non-zero."""
        finished = run_logged(command, log_path, env, timeout_s, cwd)
        self.record(label, finished, finished.returncode == 0)
        if finished.returncode != 0:
            raise StepFailed(
                f"{label} failed (exit {finished.returncode}): {finished.shell}\n"
                f"{finished.log_tail()}",
                self,
            )
        return finished
