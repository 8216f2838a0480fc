"""Following a run from its run folder, for a run whose ServerApp is another process.

On the Deployment Engine the ServerApp runs beside the SuperLink, so its log is not the
terminal of ``fractofl coordinator run``. The ServerApp rewrites ``metrics.csv``
atomically after every round; :class:`RunWatcher` polls it and shows each new round
with the same progress line (or bar) as a simulation, and :func:`finished_table` the
same closing table.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import typing
from pathlib import Path

from fractofl.server.progress import RoundProgress
from fractofl.server.recorder import RoundRow
from fractofl.server.reporting import METRICS_FILE, format_summary, read_metrics

POLL_INTERVAL_S = 1.0
_INT_FIELDS = {
    f.name for f in dataclasses.fields(RoundRow) if typing.get_type_hints(RoundRow)[f.name] is int
}


def rows_of(run_dir: Path) -> list[RoundRow]:
    """The rounds ``metrics.csv`` holds so far (none when it is not there yet)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    rows = []
    for values in read_metrics(path):
        known = {key: value for key, value in values.items() if key in RoundRow.columns()}
        rows.append(RoundRow(**{k: _typed(k, v) for k, v in known.items()}))
    return rows


def _typed(key: str, value: float) -> float | int:
    if key in _INT_FIELDS:
        return 0 if math.isnan(value) else int(value)
    return value


def finished_table(run_dir: Path) -> str:
    """The closing table a simulation prints, for the rounds in ``run_dir``."""
    return f"federated run finished; run folder {run_dir}\n{format_summary(rows_of(run_dir))}"


class RunWatcher:
    """Shows the rounds of ``run_dir`` after ``rounds_done`` as the ServerApp writes them,
    from a background thread, until :meth:`stop`."""

    def __init__(self, run_dir: Path, rounds: int, interval_s: float = POLL_INTERVAL_S) -> None:
        self.run_dir = run_dir
        self.interval_s = interval_s
        existing = rows_of(run_dir)
        self._shown = existing[-1].round if existing else -1
        self._progress = RoundProgress(rounds, done=max(self._shown, 0))
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="run-watcher", daemon=True)

    def start(self) -> RunWatcher:
        """Begin following; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Show what the run wrote last, then stop."""
        self._stopped.set()
        self._thread.join()
        self._show_new_rounds()
        self._progress.close()

    def _follow(self) -> None:
        while not self._stopped.wait(self.interval_s):
            self._show_new_rounds()

    def _show_new_rounds(self) -> None:
        try:
            rows = rows_of(self.run_dir)
        except (OSError, ValueError):  # a file being replaced: read it next time
            return
        for row in rows:
            if row.round > self._shown:
                self._progress.round_done(row)
                self._shown = row.round
