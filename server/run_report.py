"""``fractofl report``: a run's curves, and one model version scored class by class.

From a run folder it renders accuracy and loss per round (``metrics.csv``), each member's
scores on its own validation split (``member_eval.csv``), and for one
model (a registry version, verified against the trusted key, or the run's own
``model.pt``) the confusion matrix and per-class precision and recall on the run's
coordinator test set, as PNG files and a short Markdown summary.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from fractofl.core.config.run_config import RunConfig
from fractofl.core.learning.calibration import Calibration
from fractofl.core.learning.metrics import precision_recall_f1
from fractofl.core.learning.training import EvalResult
from fractofl.core.model.checkpoint import Checkpoint
from fractofl.server.cross_site import CROSS_SITE_FILE, cross_site_table, read_cross_site
from fractofl.server.evaluation import CoordinatorEvaluator
from fractofl.server.member_evaluation import MEMBER_EVAL_FILE, read_member_evaluations
from fractofl.server.member_report import MEMBER_PLOT, member_table, plot_member_accuracy
from fractofl.server.plots import plot_confusion, save_figure
from fractofl.server.reporting import METRICS_FILE, read_metrics

REPORT_FILE = "report.md"
CURVES_PLOT = "metrics_per_round.png"


@dataclass(frozen=True)
class ScoredModel:
    """The model a report describes, where it came from, and its scores."""

    label: str  # e.g. "v000004" or "model.pt"
    provenance: str  # one line: registry version and signer, or the run folder file
    round: int
    result: EvalResult
    calibration: Calibration | None = None
    signed_temperature: float | None = None
    """The temperature the version's signed metrics carry (what serving applies)."""


def score_checkpoint(cfg: RunConfig, checkpoint: Checkpoint) -> tuple[EvalResult, Calibration]:
    """``checkpoint``'s loss, accuracy and confusion matrix on the run's coordinator
    test set (the same images the run scored every round on), and its calibration."""
    evaluator = CoordinatorEvaluator(cfg, checkpoint.build_model())
    result = evaluator.evaluate_state(checkpoint.state_dict)
    return result, evaluator.calibration_of(checkpoint.state_dict)


def _calibration_lines(model: ScoredModel) -> list[str]:
    found = model.calibration
    if found is None:
        return []
    served = (
        "not calibrated when served (published without a temperature)"
        if model.signed_temperature is None
        else f"served at its signed temperature {model.signed_temperature:.3f}"
    )
    return [
        f"- calibration on the coordinator test set: expected calibration error "
        f"{found.ece:.3f} uncalibrated, {found.ece_calibrated:.3f} with temperature scaling "
        f"(fitted on one half of the images, measured on the other; temperature on all "
        f"{found.images}: {found.temperature:.3f}); {served}",
    ]


def plot_curves(rows: Sequence[dict[str, float]], path: Path, title: str) -> None:
    """Test accuracy and macro-F1 (left), test and mean member train loss (right)."""
    rounds = [int(r["round"]) for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(rounds, [r["test_accuracy"] for r in rows], marker="o", label="test accuracy")
    left.plot(rounds, [r["test_macro_f1"] for r in rows], marker="s", label="test macro-F1")
    left.set_ylim(0, 1)
    left.set_ylabel("score")
    right.plot(rounds, [r["test_loss"] for r in rows], marker="o", label="test loss")
    right.plot(rounds, [r["mean_train_loss"] for r in rows], marker="s", label="member train loss")
    right.set_ylabel("cross-entropy")
    for ax in (left, right):
        ax.set_xlabel("round")
        ax.set_xticks(rounds)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    save_figure(fig, path)


def plot_per_class(
    precision: np.ndarray, recall: np.ndarray, classes: Sequence[str], path: Path, title: str
) -> None:
    """Per-class precision and recall as grouped bars."""
    positions = np.arange(len(classes))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(positions - 0.2, precision, width=0.4, label="precision")
    ax.bar(positions + 0.2, recall, width=0.4, label="recall")
    ax.set_xticks(positions, classes, rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    ax.set_title(title)
    save_figure(fig, path)


def _cell(value: float, digits: int = 3) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _rounds_table(rows: Sequence[dict[str, float]]) -> list[str]:
    columns = [
        ("round", "round", 0),
        ("answered", "members_answered", 0),
        ("failed", "members_failed", 0),
        ("stragglers", "stragglers", 0),
        ("refused", "refused_updates", 0),
        ("train loss", "mean_train_loss", 4),
        ("test loss", "test_loss", 4),
        ("test acc", "test_accuracy", 3),
        ("macro-F1", "test_macro_f1", 3),
    ]
    present = [c for c in columns if c[1] in rows[0]]
    lines = ["| " + " | ".join(c[0] for c in present) + " |"]
    lines.append("|" + "---|" * len(present))
    for row in rows:
        cells = [
            str(int(row[key]))
            if digits == 0 and not math.isnan(row[key])
            else _cell(row[key], digits)
            for _, key, digits in present
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_report(run_dir: Path, cfg: RunConfig, model: ScoredModel, out_dir: Path) -> Path:
    """Render the run's curves and ``model``'s class-by-class scores into ``out_dir``;
    return the Markdown summary's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = read_metrics(run_dir / METRICS_FILE)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    kind = summary.get("kind", "federated")
    title = f"{run_dir.name}: {kind} {cfg.model.name}" + (
        f" ({cfg.strategy.name})" if kind == "federated" else ""
    )
    plot_curves(rows, out_dir / CURVES_PLOT, title)
    classes = list(cfg.data.classes)
    matrix = model.result.confusion
    precision, recall, f1 = precision_recall_f1(matrix)
    confusion_png = f"confusion_{model.label}.png"
    per_class_png = f"per_class_{model.label}.png"
    caption = f"{model.label} (round {model.round}): accuracy {model.result.accuracy:.3f}"
    plot_confusion(matrix, classes, out_dir / confusion_png, caption)
    plot_per_class(precision, recall, classes, out_dir / per_class_png, caption)

    lines = [
        f"# Report: {run_dir.name}",
        "",
        f"- run: {kind}, model `{cfg.model.name}`, strategy `{cfg.strategy.name}`, "
        f"{cfg.federation.members} members, {len(rows) - 1} of {cfg.federation.rounds} rounds"
        + ("" if summary else " (unfinished: no summary.json)"),
        f"- run id: `{summary.get('run_id', '?')}`, "
        f"config digest `{summary.get('config_digest', '?')}`",
        f"- coordinator test set: {model.result.examples} images",
        "",
        "## Per round",
        "",
        f"![accuracy and loss per round]({CURVES_PLOT})",
        "",
        *_rounds_table(rows),
        "",
        f"## Model {model.label}",
        "",
        f"- {model.provenance}",
        f"- accuracy {model.result.accuracy:.3f}, macro-F1 {model.result.macro_f1:.3f}, "
        f"loss {model.result.loss:.4f}",
        *_calibration_lines(model),
        "",
        "| class | precision | recall | F1 | test images |",
        "|---|---|---|---|---|",
    ]
    for index, name in enumerate(classes):
        lines.append(
            f"| {name} | {precision[index]:.3f} | {recall[index]:.3f} | {f1[index]:.3f} "
            f"| {int(matrix[index].sum())} |"
        )
    lines += [
        "",
        f"![confusion matrix]({confusion_png})",
        "",
        f"![precision and recall]({per_class_png})",
        "",
    ]
    members = read_member_evaluations(run_dir / MEMBER_EVAL_FILE)
    if members:
        plot_member_accuracy(
            members, out_dir / MEMBER_PLOT, f"{run_dir.name}: each member's own data"
        )
        lines += [
            "## Per member",
            "",
            "The global model of each round scored by each member on its own validation",
            f"split (`{MEMBER_EVAL_FILE}`); recall per class, with the member's validation",
            "images in brackets.",
            "",
            f"![each member's validation accuracy and macro-F1 per round]({MEMBER_PLOT})",
            "",
            *member_table(members, classes),
            "",
        ]
    cross_site = read_cross_site(run_dir / CROSS_SITE_FILE)
    if cross_site:
        lines += [
            "## Cross-site evaluation",
            "",
            "After the last round each member personalized the final global model; every",
            "model was then scored on every member's validation split (accuracy; a row per",
            f"model, a column per member; '-': no score, the reason is in `{CROSS_SITE_FILE}`).",
            "",
            cross_site_table(cross_site),
        ]
    path = out_dir / REPORT_FILE
    path.write_text("\n".join(lines))
    return path
