"""Live per-round progress on the coordinator's terminal (rich), one log line a round.

On a terminal a rich progress bar shows the round, members answered, train loss, test
accuracy, elapsed time and an estimate of the time left; elsewhere (CI logs, files) the
same facts appear as one plain line per round through the ``fractofl`` logger.
"""

from __future__ import annotations

import logging
import math
import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fractofl.server.recorder import RoundRow
from fractofl.server.reporting import format_round

log = logging.getLogger("fractofl")


class RoundProgress:
    """Shows rounds ``first..total`` as they complete."""

    def __init__(
        self, total: int, done: int = 0, live: bool | None = None, console: Console | None = None
    ) -> None:
        self.total = total
        self.live = sys.stderr.isatty() if live is None else live
        self._progress: Progress | None = None
        if self.live and done < total:
            self._progress = Progress(
                TextColumn("[bold]round"),
                MofNCompleteColumn(),
                BarColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console or Console(stderr=True),
                transient=False,
            )
            self._task = self._progress.add_task(
                "rounds", total=total, completed=done, status="waiting for members"
            )
            self._progress.start()

    def round_done(self, row: RoundRow) -> None:
        """Advance the bar (or print the line) for a completed round."""
        log.info("%s", format_round(row, self.total))
        if self._progress is None:
            return
        loss = "-" if math.isnan(row.mean_train_loss) else f"{row.mean_train_loss:.3f}"
        status = (
            f"members {row.members_answered}/{row.members_sampled or row.members_answered}"
            f" | loss {loss} | acc {row.test_accuracy:.3f}"
        )
        self._progress.update(self._task, completed=row.round, status=status)

    def close(self) -> None:
        """Stop the live display (safe to call twice)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
