"""The report's per-member part: how each member's own validation split scores the global
model round by round (a plot), and class by class at the last round (a table)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt

from fractofl.server.plots import save_figure

MEMBER_PLOT = "member_accuracy.png"


def _number(text: str) -> float | None:
    return float(text) if text else None


def latest_per_member(rows: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """Each member's row of the last round it evaluated, by member name."""
    latest: dict[str, dict[str, str]] = {}
    for row in rows:
        if row["member"] not in latest or int(row["round"]) >= int(latest[row["member"]]["round"]):
            latest[row["member"]] = row
    return [latest[name] for name in sorted(latest)]


def plot_member_accuracy(rows: Sequence[dict[str, str]], path: Path, title: str) -> None:
    """Validation accuracy (left) and macro-F1 (right) of the global model per round, one
    line per member, each on its own validation split."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for member in sorted({row["member"] for row in rows}):
        own = sorted((r for r in rows if r["member"] == member), key=lambda r: int(r["round"]))
        for ax, column in ((left, "val_accuracy"), (right, "val_macro_f1")):
            points = [(int(r["round"]), _number(r[column])) for r in own]
            shown = [(x, y) for x, y in points if y is not None]
            ax.plot([x for x, _ in shown], [y for _, y in shown], marker="o", label=member)
    for ax, label in ((left, "validation accuracy"), (right, "validation macro-F1")):
        ax.set_ylim(0, 1)
        ax.set_xlabel("round")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    save_figure(fig, path)


def _score(text: str) -> str:
    return "-" if not text else f"{float(text):.3f}"


def member_table(rows: Sequence[dict[str, str]], classes: Sequence[str]) -> list[str]:
    """Markdown: each member at its last round, recall per class with its validation
    images in brackets ("-": none; "?": the member's policy withholds the count)."""
    header = ["member", "round", "val images", "accuracy", "macro-F1", *classes]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in latest_per_member(rows):
        cells = [
            row["member"],
            row["round"],
            row["val_examples"],
            _score(row["val_accuracy"]),
            _score(row["val_macro_f1"]),
        ]
        for name in classes:
            count = row.get(f"images_{name}", "")
            cells.append(f"{_score(row.get(f'recall_{name}', ''))} ({count or '?'})")
        lines.append("| " + " | ".join(cells) + " |")
    return lines
