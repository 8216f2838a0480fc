"""Figures read off a fractofl run's per-round metrics (metrics.csv rows)."""

from __future__ import annotations

import math
from collections.abc import Sequence

Rows = Sequence[dict[str, float]]


def best_accuracy(rows: Rows) -> float | None:
    """The highest coordinator test accuracy of a trained round (round 0 left out)."""
    trained = [row["test_accuracy"] for row in rows if row["round"] >= 1]
    return max(trained) if trained else None


def rounds_to_reach(rows: Rows, target: float | None) -> int | None:
    """First round (>= 1) whose test_accuracy >= ``target``; None if none does."""
    if target is None:
        return None
    for row in rows:
        if row["round"] >= 1 and row["test_accuracy"] >= target:
            return int(row["round"])
    return None


def total_refused(rows: Rows) -> int | None:
    """Sum of refused_updates over all rounds; None without rows."""
    if not rows:
        return None
    return int(sum(row.get("refused_updates", 0.0) for row in rows if row["round"] >= 1))


def mean_bytes_per_member(rows: Rows) -> float | None:
    """Mean of bytes_per_member over the training rounds (round 0 has none)."""
    values = [
        row["bytes_per_member"]
        for row in rows
        if row["round"] >= 1 and not math.isnan(row.get("bytes_per_member", math.nan))
    ]
    return sum(values) / len(values) if values else None
