"""Every simulated member's gain from joining: its local-only, global and personalized
models on its own validation split (the benchmark's and ``fractofl member gains``')."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fractofl.client.personal.class_mix import version_floor
from fractofl.client.personal.comparison import score_on
from fractofl.client.personal.global_version import GlobalVersion
from fractofl.client.personal.local_models import (
    NoValidationImagesError,
    member_trainer,
    personalize,
    train_baseline,
)
from fractofl.core.config.run_config import RunConfig
from fractofl.core.learning.member_data import load_member_data, reference_dir
from fractofl.core.learning.training import EvalResult

log = logging.getLogger("fractofl")


@dataclass(frozen=True)
class MemberGain:
    """One member's three scores on its own validation split."""

    member: str
    local_only: EvalResult
    global_model: EvalResult
    personalized: EvalResult

    @property
    def gain(self) -> float:
        """Accuracy of the global model minus the local-only one's."""
        return self.global_model.accuracy - self.local_only.accuracy

    @property
    def personalized_gain(self) -> float:
        """Accuracy of the personalized model minus the local-only one's."""
        return self.personalized.accuracy - self.local_only.accuracy


def member_gains(
    cfg: RunConfig,
    global_version: GlobalVersion,
    member_dirs: Sequence[Path],
    cache_root: Path,
    on_member: Callable[[MemberGain], None] = lambda _: None,
) -> list[MemberGain]:
    """For each member folder: train its local-only baseline with the global version's
    budget (its round), personalize the global version, and score all three."""
    gains = []
    for partition, folder in enumerate(member_dirs):
        data = load_member_data(folder, cfg, cache_root, reference_dir(cfg))
        fit = member_trainer(data, cfg)
        score = functools.partial(score_on, data, cfg)
        baseline, _ = train_baseline(cfg, global_version.meta.round, fit, score)
        scores = [
            score(baseline),
            score(global_version.checkpoint.build_model()),
            score(
                personalize(
                    global_version.checkpoint.build_model(),
                    cfg,
                    fit,
                    cfg.seed,
                    data.own_class_counts(len(cfg.data.classes)),
                    version_floor(global_version.meta),
                )
            ),
        ]
        if any(s is None for s in scores):
            raise NoValidationImagesError(f"member folder {folder} has no validation images")
        local, global_model, personal = (s for s in scores if s is not None)
        gains.append(MemberGain(f"partition-{partition}", local, global_model, personal))
        on_member(gains[-1])
    return gains


def gains_table(gains: Sequence[MemberGain]) -> str:
    """A Markdown table: each member's three accuracies and its gains from joining."""
    lines = [
        "| member | images | local-only | global | personalized | gain (global) "
        "| gain (personalized) |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in gains:
        lines.append(
            f"| {g.member} | {g.local_only.examples} | {g.local_only.accuracy:.3f} | "
            f"{g.global_model.accuracy:.3f} | {g.personalized.accuracy:.3f} | {g.gain:+.3f} | "
            f"{g.personalized_gain:+.3f} |"
        )
    return "\n".join(lines) + "\n"


def gains_json(gains: Sequence[MemberGain]) -> list[dict[str, object]]:
    """Every member's three scores, for machines (``member gains --json``)."""
    return [
        {
            "member": g.member,
            "val_examples": g.local_only.examples,
            **{
                f"{name}_{metric}": getattr(getattr(g, attr), metric)
                for name, attr in (
                    ("local_only", "local_only"),
                    ("global", "global_model"),
                    ("personalized", "personalized"),
                )
                for metric in ("accuracy", "macro_f1")
            },
        }
        for g in gains
    ]
