"""Cross-site evaluation (``federation.cross_site``, off by default), after the last round.

Each member personalizes the final global model on its own training images and sends the
personalized model back with its own scores of it; then the global model and every
personalized one go to every member, which scores each on its validation split. Models
travel, images never do; but a member's own model carries information about its data,
which is why the run must ask for it and a member's policy can refuse
(``share_personal_model: false``). A member that fails, refuses or has left leaves its
row or its column blank with the reason; the rest of the matrix is kept.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ArrayRecord, Message, RecordDict
from flwr.serverapp import Grid

from fractofl.core.wire.member_evaluation import MemberEvaluation, read_evaluation
from fractofl.core.wire.update_protocol import (
    ARRAYS_KEY,
    CROSS_SITE_MESSAGE,
    PERSONALIZE_MESSAGE,
)
from fractofl.server.member_evaluation import member_label
from fractofl.server.replies_in_time import replies_as_they_come
from fractofl.server.rounds import plain_reason

log = logging.getLogger("fractofl")

CROSS_SITE_FILE = "cross_site.csv"
CROSS_SITE_COLUMNS = [
    "model",
    "member",
    "val_examples",
    "val_accuracy",
    "val_macro_f1",
    "val_loss",
    "own_accuracy",
    "note",
]
GLOBAL_MODEL = "global"


def personalized_name(member: str) -> str:
    """The matrix's name of ``member``'s personalized model."""
    return f"personalized:{member}"


@dataclass(frozen=True)
class CrossSiteCell:
    """One model scored by one member (``evaluation`` None: no score, ``note`` says why);
    ``own`` is what the model's owner reported of it when it sent it (its diagonal)."""

    model: str
    member: str
    evaluation: MemberEvaluation | None
    note: str = ""
    own: MemberEvaluation | None = None


@dataclass(frozen=True)
class _Answers:
    """Replies to one batch of messages, by node: evaluations, models, and reasons."""

    evaluations: dict[int, MemberEvaluation]
    models: dict[int, ArrayRecord]
    missing: dict[int, str]


def _exchange(
    grid: Grid, nodes: Sequence[int], arrays: ArrayRecord, kind: str, timeout_s: float, classes: int
) -> _Answers:
    messages = [
        Message(RecordDict({ARRAYS_KEY: arrays}), dst_node_id=node, message_type=kind)
        for node in nodes
    ]
    answers = _Answers(
        {}, {}, {node: f"no reply within {timeout_s:.0f} s (left?)" for node in nodes}
    )
    for reply in replies_as_they_come(grid, messages, timeout_s):
        node = reply.metadata.src_node_id
        if reply.has_error():
            answers.missing[node] = plain_reason(str(reply.error.reason))
            continue
        del answers.missing[node]
        for metrics in reply.content.metric_records.values():
            answers.evaluations[node] = read_evaluation(metrics, classes)
        if ARRAYS_KEY in reply.content.array_records:
            answers.models[node] = reply.content.array_records[ARRAYS_KEY]
    return answers


def cross_site_evaluation(
    grid: Grid, final: ArrayRecord, timeout_s: float, names: Mapping[int, str], classes: int
) -> list[CrossSiteCell]:
    """The global model ``final`` and each member's personalized copy of it, scored by
    every connected member; a cell per (model, member), blank ones with the reason."""
    nodes = sorted(grid.get_node_ids())
    log.info("cross-site evaluation: %d member(s) personalize the final model", len(nodes))
    asked = _exchange(grid, nodes, final, PERSONALIZE_MESSAGE, timeout_s, classes)

    def label(node: int) -> str:
        found = asked.evaluations.get(node)
        return member_label(node, names, found.partition if found else None)

    models: list[tuple[str, ArrayRecord, MemberEvaluation | None]] = [(GLOBAL_MODEL, final, None)]
    for node in nodes:
        if node in asked.models:
            models.append(
                (personalized_name(label(node)), asked.models[node], asked.evaluations.get(node))
            )
        else:
            log.warning(
                "cross-site: no personalized model from %s: %s",
                label(node),
                asked.missing.get(node, "no model in its reply"),
            )
    cells: list[CrossSiteCell] = [
        CrossSiteCell(personalized_name(label(node)), "", None, f"not sent: {reason}")
        for node, reason in asked.missing.items()
    ]
    for model_name, arrays, own in models:
        scored = _exchange(grid, nodes, arrays, CROSS_SITE_MESSAGE, timeout_s, classes)
        for node in nodes:
            owner = model_name == personalized_name(label(node))
            if node in scored.evaluations:
                cells.append(
                    CrossSiteCell(
                        model_name,
                        label(node),
                        scored.evaluations[node],
                        "",
                        own if owner else None,
                    )
                )
            else:
                reason = scored.missing.get(node, "no scores in its reply")
                log.warning("cross-site: %s did not score %s: %s", label(node), model_name, reason)
                cells.append(CrossSiteCell(model_name, label(node), None, reason))
    return cells


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def write_cross_site(path: Path, cells: Sequence[CrossSiteCell]) -> None:
    """``cross_site.csv``: one row per (model, member); blank scores with a note."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CROSS_SITE_COLUMNS)
        for cell in cells:
            found = cell.evaluation
            writer.writerow(
                [
                    cell.model,
                    cell.member,
                    "" if found is None else found.examples,
                    _cell(found.accuracy if found else None),
                    _cell(found.macro_f1 if found else None),
                    _cell(found.loss if found else None),
                    _cell(cell.own.accuracy if cell.own else None),
                    cell.note,
                ]
            )


def read_cross_site(path: Path) -> list[dict[str, str]]:
    """The file's rows (empty when the run made none)."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def cross_site_table(rows: Sequence[dict[str, str]]) -> str:
    """A Markdown matrix of validation accuracy: a row per model, a column per member
    ('-': no score; the note is in cross_site.csv)."""
    members = sorted({row["member"] for row in rows if row["member"]})
    models = list(dict.fromkeys(row["model"] for row in rows))
    score = {(row["model"], row["member"]): row["val_accuracy"] for row in rows}
    lines = ["| model | " + " | ".join(members) + " |", "|---|" + "---|" * len(members)]
    for model in models:
        cells = []
        for member in members:
            value = score.get((model, member), "")
            cells.append(f"{float(value):.3f}" if value else "-")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
