"""The coordinator's learning-rate schedule over rounds (``train.lr_schedule``): the rate
each round's members train with, sent in the round's instruction."""

from __future__ import annotations

import math

from fractofl.core.config.run_config import TrainConfig

LR_SCHEDULES = ("constant", "cosine")


def round_lr(train: TrainConfig, server_round: int, rounds: int) -> float:
    """``train.lr`` in round ``server_round`` of ``rounds``: constant, or cosine from
    ``train.lr`` in round 1 to ``train.lr * train.lr_final_fraction`` in the last round."""
    if train.lr_schedule == "constant" or rounds <= 1:
        return train.lr
    if train.lr_schedule != "cosine":
        raise ValueError(
            f"train.lr_schedule={train.lr_schedule!r}; valid: {', '.join(LR_SCHEDULES)}"
        )
    progress = (min(max(server_round, 1), rounds) - 1) / (rounds - 1)
    final = train.lr * train.lr_final_fraction
    return final + (train.lr - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
