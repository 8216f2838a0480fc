"""Run-folder outputs: the metrics file and the summary table (the plots, which need
matplotlib, are in :mod:`fractofl.server.plots`)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from fractofl.core.files.atomic import atomic_write_bytes
from fractofl.server.recorder import RoundRow

METRICS_FILE = "metrics.csv"
ACCURACY_PLOT = "accuracy_per_round.png"
CONFUSION_PLOT = "confusion_matrix.png"


def write_metrics(rows: Sequence[RoundRow], path: Path) -> None:
    """Rewrite the per-round metrics CSV atomically, so a reader never sees half a file."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(RoundRow.columns())
    for row in rows:
        writer.writerow([_cell(getattr(row, name)) for name in RoundRow.columns()])
    atomic_write_bytes(path, buffer.getvalue().encode())


def read_metrics(path: Path) -> list[dict[str, float]]:
    """Read a metrics CSV back as numbers (empty cells become NaN)."""
    with open(path, newline="") as handle:
        return [
            {k: float(v) if v != "" else math.nan for k, v in row.items()}
            for row in csv.DictReader(handle)
        ]


def _cell(value: float | int) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.10g}"
    return str(value)


def format_round(row: RoundRow, rounds: int) -> str:
    """One progress line."""
    loss = "  -   " if math.isnan(row.mean_train_loss) else f"{row.mean_train_loss:.4f}"
    return (
        f"round {row.round:>3}/{rounds} | members {row.members_answered:>2} | train loss {loss}"
        f" | test acc {row.test_accuracy:.3f} | macro-F1 {row.test_macro_f1:.3f}"
        f" | {row.elapsed_s:6.1f} s"
    )


def format_summary(rows: Sequence[RoundRow]) -> str:
    """The table printed at the end of a run."""
    header = f"{'round':>5}  {'members':>7}  {'train loss':>10}  {'test acc':>8}  {'macro-F1':>8}"
    lines = [header, "-" * len(header)]
    for r in rows:
        loss = "-" if math.isnan(r.mean_train_loss) else f"{r.mean_train_loss:.4f}"
        lines.append(
            f"{r.round:>5}  {r.members_answered:>7}  {loss:>10}"
            f"  {r.test_accuracy:>8.3f}  {r.test_macro_f1:>8.3f}"
        )
    return "\n".join(lines)
