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

TRAINING_LOSSES = ("cross_entropy", "balanced_softmax")

# A class with no training image gets this frequency rather than zero (log 0 = -inf):
# its logit is offset far enough down that its gradient is negligible, and the sums stay
# finite under float16 autocast.
ABSENT_CLASS_FREQUENCY = 1e-4


def logit_offset(loss: str, class_counts: Sequence[int]) -> torch.Tensor | None:
    """What ``train.loss`` adds to the logits during training: None for
    ``cross_entropy``; for ``balanced_softmax`` the log class frequencies of the split
    whose per-class example counts are ``class_counts``."""
    if loss == "cross_entropy":
        return None
    if loss != "balanced_softmax":
        raise ValueError(f"train.loss={loss!r}; valid: {', '.join(TRAINING_LOSSES)}")
    counts = torch.tensor(class_counts, dtype=torch.float32)
    total = float(counts.sum())
    if total <= 0:
        raise ValueError("balanced_softmax needs the training split's class counts; all are 0")
    return torch.log(torch.clamp(counts / total, min=ABSENT_CLASS_FREQUENCY))
