"""A member's own models, trained on its own training split only: the local-only
baseline (the federation's model and budget, without the federation) and the
personalized model (a global version fine-tuned on the member's images)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from torch import nn

from fractofl.client.member import train_locally
from fractofl.core.config.run_config import RunConfig
from fractofl.core.learning.member_data import MemberData
from fractofl.core.learning.training import EvalResult
from fractofl.core.model.factory import model_for

log = logging.getLogger("fractofl")


class NoValidationImagesError(ValueError):
    """The member has no validation images, so its own models cannot be scored."""


@dataclass(frozen=True)
class RoundScore:
    """A baseline's score on the member's validation split after a round's epochs."""

    round: int
    train_loss: float
    result: EvalResult


Evaluate = Callable[[nn.Module], EvalResult | None]
Train = Callable[[nn.Module, int, int, float], float]
"""(model, seed, epochs, learning rate) -> the last epoch's training loss."""


def member_trainer(data: MemberData, cfg: RunConfig) -> Train:
    """Training on the member's training split with the federation's recipe
    (``train.*``), seeded per call as a member's round is. The loss is always plain
    cross-entropy: these models serve the member's own images, whose class frequencies
    ``train.loss=balanced_softmax`` would train out of them."""

    def run(model: nn.Module, seed: int, epochs: int, lr: float) -> float:
        own = replace(cfg.train, local_epochs=epochs, lr=lr, loss="cross_entropy")
        recipe = replace(cfg, train=own)
        return train_locally(model, data, recipe, seed).loss

    return run


def single_class_warning(data: MemberData, classes: Sequence[str]) -> str | None:
    """A warning when the member's training images hold one class only (or none)."""
    counts = data.train.class_counts(len(classes))
    held = [name for name, n in zip(classes, counts, strict=True) if n]
    if len(held) > 1:
        return None
    only = held[0] if held else "no class"
    return (
        f"this member's training images hold {only} only: a model trained on them alone can "
        "answer nothing else, which is what joining the federation is for"
    )


def train_baseline(
    cfg: RunConfig,
    rounds: int,
    fit: Train,
    score: Evaluate,
    on_round: Callable[[RoundScore], None] = lambda _: None,
) -> tuple[nn.Module, list[RoundScore]]:
    """The local-only model: the run's network from fresh weights, ``rounds`` times
    ``train.local_epochs`` epochs on the member's training split (the federated model's
    budget), scored on its validation split after each round's epochs."""
    if rounds < 1:
        raise ValueError(f"a baseline needs at least one round of budget, not {rounds}")
    model = model_for(cfg)
    scores: list[RoundScore] = []
    for server_round in range(1, rounds + 1):
        loss = fit(model, cfg.seed + server_round, cfg.train.local_epochs, cfg.train.lr)
        result = score(model)
        if result is None:
            raise NoValidationImagesError("this member has no validation images to score on")
        scores.append(RoundScore(server_round, loss, result))
        on_round(scores[-1])
    return model, scores


def personalize(model: nn.Module, cfg: RunConfig, fit: Train, seed: int) -> nn.Module:
    """``model`` (a global one) fine-tuned in place on the member's training split for
    ``train.personalize_epochs`` epochs at ``train.personalize_lr``."""
    fit(model, seed, cfg.train.personalize_epochs, cfg.train.personalize_lr)
    return model.eval()
