"""The plots of run folders and reports, as PNG files (matplotlib, headless).

Kept apart from :mod:`fractofl.server.reporting` so that a coordinator imports
matplotlib (half a second) when it draws, at the end of a run, not when it starts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: coordinators run headless
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from fractofl.server.recorder import RoundRow

FIGURE_DPI = 120


def save_figure(fig: Figure, path: Path) -> None:
    """Lay out, write as PNG and close ``fig`` (run folders hold many plots)."""
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)


def plot_accuracy(rows: Sequence[RoundRow], path: Path, title: str) -> None:
    """Coordinator test accuracy and macro-F1 per round."""
    rounds = [r.round for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(rounds, [r.test_accuracy for r in rows], marker="o", label="test accuracy")
    ax.plot(rounds, [r.test_macro_f1 for r in rows], marker="s", label="test macro-F1")
    ax.set_xlabel("round")
    ax.set_ylabel("score")
    ax.set_ylim(0, 1)
    ax.set_xticks(rounds)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    save_figure(fig, path)


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: Path, title: str) -> None:
    """Confusion matrix with counts, rows true class, columns predicted class."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(matrix, cmap="Blues")
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, classes, rotation=30, ha="right")
    ax.set_yticks(ticks, classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    limit = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(
            j, i, str(count), ha="center", va="center", color="white" if count > limit else "black"
        )
    ax.set_title(title)
    save_figure(fig, path)
