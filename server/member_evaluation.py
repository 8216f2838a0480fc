"""Every member's scores of every round's global model on its own validation split
(``member_eval.csv`` in the run folder), named as the coordinator knows the member: its
registered name in a real federation, its partition in a simulation."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from flwr.app import Message

from fractofl.core.wire.member_evaluation import MemberEvaluation, read_evaluation

MEMBER_EVAL_FILE = "member_eval.csv"
SCORE_COLUMNS = ["val_examples", "val_loss", "val_accuracy", "val_macro_f1"]


def member_label(node: int, names: Mapping[int, str], partition: int | None) -> str:
    """``org2`` (registered), ``partition-3`` (simulated), else ``node-<id>``."""
    if node in names:
        return names[node]
    return f"partition-{partition}" if partition is not None else f"node-{node}"


def member_columns(classes: Sequence[str]) -> list[str]:
    """The file's header: who, the scores, then recall and images per class."""
    return [
        "round",
        "node_id",
        "member",
        *SCORE_COLUMNS,
        *(f"recall_{name}" for name in classes),
        *(f"images_{name}" for name in classes),
    ]


def evaluations_of(
    replies: Sequence[Message], num_classes: int
) -> list[tuple[int, MemberEvaluation]]:
    """(node id, evaluation) of each reply that carries one; error replies are skipped
    (members.csv has the training round's failures)."""
    found = []
    for reply in replies:
        if reply.has_error() or not reply.has_content():
            continue
        for metrics in reply.content.metric_records.values():
            found.append((reply.metadata.src_node_id, read_evaluation(metrics, num_classes)))
    return found


def _cell(value: float | int | None) -> str:
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def append_member_evaluations(
    path: Path,
    classes: Sequence[str],
    server_round: int,
    evaluations: Sequence[tuple[int, MemberEvaluation]],
    names: Mapping[int, str],
) -> None:
    """Append one row per member evaluation of round ``server_round`` (blank cells: not
    sent, e.g. a class without validation images, or counts the member withheld)."""
    new = not path.exists()
    rows: list[tuple[str, list[object]]] = []  # (member, row), sorted by member
    for node, found in evaluations:
        recall = found.recall or (None,) * len(classes)
        counts = found.counts or (None,) * len(classes)
        label = member_label(node, names, found.partition)
        rows.append(
            (
                label,
                [
                    server_round,
                    node,
                    label,
                    found.examples,
                    _cell(found.loss),
                    _cell(found.accuracy),
                    _cell(found.macro_f1),
                    *map(_cell, recall),
                    *map(_cell, counts),
                ],
            )
        )
    with open(path, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(member_columns(classes))
        writer.writerows(row for _, row in sorted(rows, key=lambda pair: pair[0]))


def read_member_evaluations(path: Path) -> list[dict[str, str]]:
    """The file's rows as read (empty when the run has none yet)."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
