"""Does joining pay off for this member? Its local-only, global and personalized models
scored on its own validation split, side by side."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from fractofl.client.member import evaluate_locally
from fractofl.core.config.run_config import RunConfig
from fractofl.core.learning.member_data import MemberData
from fractofl.core.learning.metrics import precision_recall_f1
from fractofl.core.learning.training import EvalResult

LOCAL_ONLY = "local-only"
GLOBAL = "global"
PERSONALIZED = "personalized"


@dataclass(frozen=True)
class ComparedModel:
    """One model's score on the member's validation split; ``result`` is None when the
    member has not made that model yet (``missing`` says how)."""

    role: str
    version: str
    result: EvalResult | None
    missing: str = ""


def score_on(data: MemberData, cfg: RunConfig, model: nn.Module) -> EvalResult | None:
    """``model`` on the member's validation split (None when it has none)."""
    return evaluate_locally(model, data, cfg)


def comparison_table(rows: Sequence[ComparedModel], classes: Sequence[str]) -> str:
    """A Markdown table of the models' accuracy, macro-F1 and recall per class, and the
    member's gain from joining (global and personalized minus local-only)."""
    header = ["model", "version", "images", "accuracy", "macro-F1", *classes]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if row.result is None:
            cells = [row.role, row.version or "none", "", "", "", *([""] * len(classes))]
        else:
            _, recall, _ = precision_recall_f1(row.result.confusion)
            counts = row.result.confusion.sum(axis=1)
            cells = [
                row.role,
                row.version,
                str(row.result.examples),
                f"{row.result.accuracy:.3f}",
                f"{row.result.macro_f1:.3f}",
                *(f"{r:.3f}" if n else "-" for r, n in zip(recall, counts, strict=True)),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    scored = {row.role: row.result for row in rows if row.result is not None}
    local = scored.get(LOCAL_ONLY)
    lines.append("")
    for role in (GLOBAL, PERSONALIZED):
        other = scored.get(role)
        if local is not None and other is not None:
            lines.append(
                f"- gain of the {role} model over local-only: accuracy "
                f"{other.accuracy - local.accuracy:+.3f}, macro-F1 "
                f"{other.macro_f1 - local.macro_f1:+.3f}"
            )
    lines += [f"- {row.role}: {row.missing}" for row in rows if row.result is None and row.missing]
    lines.append("- recall '-': no validation images of that class")
    return "\n".join(lines) + "\n"
