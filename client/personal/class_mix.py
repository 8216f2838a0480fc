"""A member's own class mix in its personalized model.

A global model trained with ``train.loss=balanced_softmax`` answers as if every class
were equally frequent: each member's class frequencies were explained away by the loss's
offset. A member whose images are mostly of one or two fracture modes gets its own answer
by adding back the log of its own class frequencies, the same offset its training used,
to the classifier's bias (Menon et al., "Long-tail learning via logit adjustment",
ICLR 2021; the personalized head of Fed-RoD, Chen and Chao, ICLR 2022). The weights and
features are the global model's; the member's personalized model is then as likely as
the member's own images to answer a frequent class, and needs more evidence for a rare
one (its recall per class is in ``fractofl member report``).

Fine-tuning a personalized model then trains that same classifier layer by default
(``train.personalize_layers``): on a member's few hundred images, fine-tuning the whole
network measured worse than not fine-tuning at all (``bench/RESULTS.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fractofl.core.config.run_config import TrainConfig
from fractofl.core.learning.loss import logit_offset
from fractofl.core.learning.train_choices import BALANCED_SOFTMAX
from fractofl.core.trust.registry import BALANCED_SOFTMAX_FLOOR_METRIC, VersionMetadata


class NoClassifierBiasError(ValueError):
    """The network has no final linear layer with a bias to hold a class mix."""


def classifier_layer(model: nn.Module, classes: int) -> nn.Linear:
    """The network's last linear layer: the one whose outputs are the ``classes`` logits."""
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linear or linear[-1].out_features != classes or linear[-1].bias is None:
        raise NoClassifierBiasError(
            f"{type(model).__name__} does not end in a linear layer with a bias and "
            f"{classes} outputs, so it cannot take on a member's class mix"
        )
    return linear[-1]


def adopt_class_mix(model: nn.Module, class_counts: Sequence[int], floor: float) -> nn.Module:
    """``model`` with the log of the class frequencies ``class_counts`` (each at least
    ``floor``, as the training loss had them) added to its classifier's bias, in place."""
    offset = logit_offset(BALANCED_SOFTMAX, class_counts, floor)
    assert offset is not None  # balanced softmax always has one
    layer = classifier_layer(model, len(class_counts))
    with torch.no_grad():
        layer.bias.add_(offset.to(layer.bias.device, layer.bias.dtype))
    return model


def run_floor(train: TrainConfig) -> float | None:
    """The balanced-softmax floor a run's members trained with (``train.*``); None when
    they trained with plain cross-entropy, whose logits already hold the federation's mix."""
    return train.balanced_softmax_floor if train.loss == BALANCED_SOFTMAX else None


def version_floor(meta: VersionMetadata) -> float | None:
    """The balanced-softmax floor global version ``meta`` records; None when it does not
    (trained with cross-entropy, or published before the floor was recorded)."""
    value = meta.metrics.get(BALANCED_SOFTMAX_FLOOR_METRIC)
    return None if value is None else float(value)
