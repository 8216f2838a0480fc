"""The training loss (``train.loss``), and what it needs from the training split.

``cross_entropy`` is the plain loss. ``balanced_softmax`` (Ren et al., "Balanced
Meta-Softmax", NeurIPS 2020; in federated learning against label skew as in FedLC,
Zhang et al., ICML 2022) adds the log of the training split's class frequencies to the
logits before the cross-entropy, during training only. A member that holds mostly one
class then no longer learns "answer my class" (its prior is explained by the offset),
and a class it holds no image of is not pushed down in the shared classifier; what the
member sends is the evidence its images give for each class. The model that is served
or evaluated is unchanged: its logits are used as they are, as under a uniform prior.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fractofl.core.learning.train_choices import BALANCED_SOFTMAX, CROSS_ENTROPY, TRAINING_LOSSES


def logit_offset(loss: str, class_counts: Sequence[int], floor: float) -> torch.Tensor | None:
    """What ``train.loss`` adds to the logits during training: None for
    ``cross_entropy``; for ``balanced_softmax`` the log class frequencies of the split
    whose per-class example counts are ``class_counts``, each at least ``floor``
    (``train.balanced_softmax_floor``).

    The floor sets how much a member learns about the classes it lacks: a class rarer
    than ``floor`` (or absent: log 0 would be -inf) is offset by ``log(floor)``. The
    member's images still push that class's logit down, at first with about ``floor``
    times the strength of plain cross-entropy, fading as their own class takes the lead.
    A tiny floor (1e-4) leaves a member that holds one class almost nothing to learn; a
    floor of 1 is plain cross-entropy.
    """
    if loss == CROSS_ENTROPY:
        return None
    if loss != BALANCED_SOFTMAX:
        raise ValueError(f"train.loss={loss!r}; valid: {', '.join(TRAINING_LOSSES)}")
    if not 0 < floor <= 1:
        raise ValueError(f"train.balanced_softmax_floor={floor} must be above 0 and at most 1")
    counts = torch.tensor(class_counts, dtype=torch.float32)
    total = float(counts.sum())
    if total <= 0:
        raise ValueError("balanced_softmax needs the training split's class counts; all are 0")
    return torch.log(torch.clamp(counts / total, min=floor))
