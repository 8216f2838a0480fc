"""A member's own models, trained on its own training split only: the local-only
baseline (the federation's model and budget, without the federation) and the
personalized model (a global version made the member's, :func:`personalize`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from torch import nn

from fractofl.client.member import train_locally
from fractofl.client.personal.class_mix import adopt_class_mix, classifier_layer
from fractofl.core.config.run_config import RunConfig
from fractofl.core.learning.member_data import MemberData
from fractofl.core.learning.train_choices import CLASSIFIER_LAYER, CROSS_ENTROPY, PERSONALIZE_LAYERS
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
Train = Callable[[nn.Module, int, int, float, nn.Module | None], float]
"""(model, seed, epochs, learning rate, the part that learns or None for all of it) ->
the last epoch's training loss."""


def member_trainer(data: MemberData, cfg: RunConfig) -> Train:
    """Training on the member's training split with the federation's recipe
    (``train.*``), seeded per call as a member's round is. The loss is always plain
    cross-entropy: these models serve the member's own images, whose class frequencies
    ``train.loss=balanced_softmax`` would train out of them."""

    def run(model: nn.Module, seed: int, epochs: int, lr: float, part: nn.Module | None) -> float:
        own = replace(cfg.train, local_epochs=epochs, lr=lr, loss=CROSS_ENTROPY)
        recipe = replace(cfg, train=own)
        return train_locally(model, data, recipe, seed, trained_part=part).loss

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
        loss = fit(model, cfg.seed + server_round, cfg.train.local_epochs, cfg.train.lr, None)
        result = score(model)
        if result is None:
            raise NoValidationImagesError("this member has no validation images to score on")
        scores.append(RoundScore(server_round, loss, result))
        on_round(scores[-1])
    return model, scores


def personalize(
    model: nn.Module,
    cfg: RunConfig,
    fit: Train,
    seed: int,
    class_counts: Sequence[int],
    floor: float | None,
) -> nn.Module:
    """``model`` (a global one) made the member's, in place. When its members trained with
    balanced softmax (``floor``: that loss's floor, else None) it first takes on the
    member's class mix, the frequencies ``class_counts`` of its training split
    (:mod:`fractofl.client.personal.class_mix`); then ``train.personalize_epochs`` epochs
    at ``train.personalize_lr`` fine-tune its classifier layer, or the whole network with
    ``train.personalize_layers=all``."""
    if floor is not None:
        adopt_class_mix(model, class_counts, floor)
    epochs = cfg.train.personalize_epochs
    if epochs > 0:
        layers = cfg.train.personalize_layers
        if layers not in PERSONALIZE_LAYERS:
            raise ValueError(
                f"train.personalize_layers={layers!r}; valid: {', '.join(PERSONALIZE_LAYERS)}"
            )
        part = classifier_layer(model, len(class_counts)) if layers == CLASSIFIER_LAYER else None
        fit(model, seed, epochs, cfg.train.personalize_lr, part)
    return model.eval()
