"""The training loss (``train.loss``): balanced softmax's logit offset, and what it does
to a model trained on a skewed split (the label skew of a member that holds mostly one
class)."""

from __future__ import annotations

import math

import pytest
import torch

from fractofl.core.images.labelled import LabelledTensors, make_loader
from fractofl.core.learning.loss import ABSENT_CLASS_FREQUENCY, logit_offset
from fractofl.core.learning.training import evaluate, train

CPU = torch.device("cpu")


def test_cross_entropy_adds_nothing_and_balanced_softmax_adds_log_frequencies() -> None:
    assert logit_offset("cross_entropy", [5, 0, 3]) is None
    offset = logit_offset("balanced_softmax", [6, 0, 2])
    assert offset is not None
    expected = [math.log(0.75), math.log(ABSENT_CLASS_FREQUENCY), math.log(0.25)]
    assert offset.tolist() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("loss", "counts", "said"),
    [
        ("focal", [1, 1], "train.loss='focal'; valid: cross_entropy, balanced_softmax"),
        ("balanced_softmax", [0, 0], "all are 0"),
    ],
)
def test_an_unknown_loss_or_an_empty_split_is_refused(
    loss: str, counts: list[int], said: str
) -> None:
    with pytest.raises(ValueError, match=said):
        logit_offset(loss, counts)


def _points(per_class: tuple[int, int], seed: int) -> LabelledTensors:
    # Two overlapping Gaussian classes in 2-D (means -0.5 and +0.5 along both axes).
    generator = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    x = torch.randn(len(y), 2, generator=generator) + (y.float() - 0.5)[:, None]
    return LabelledTensors(x, y)


def _minority_recall(loss: str) -> float:
    skewed = _points((380, 20), seed=1)  # a member that holds mostly class 0
    offset = logit_offset(loss, skewed.class_counts(2))
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 2)
    loader = make_loader(skewed, 50, True, None, seed=0)
    train(model, loader, 30, 0.1, 0.9, 0.0, CPU, logit_offset=offset)
    balanced = make_loader(_points((400, 400), seed=2), 100, False, None, 0)
    confusion = evaluate(model, balanced, 2, CPU).confusion
    return float(confusion[1, 1] / confusion[1].sum())


def test_balanced_softmax_trains_the_members_prior_out_of_the_model() -> None:
    # Execute: the same skewed split, model and steps with each loss; scored on a
    # balanced set, as the coordinator's test set and the other members are
    plain = _minority_recall("cross_entropy")
    balanced = _minority_recall("balanced_softmax")
    # Assert: plain cross-entropy learns to answer the member's own class and misses most
    # of the other; balanced softmax finds most of it (the classes overlap: not all)
    assert plain < 0.35
    assert balanced > 0.6


def _weight_change(loss: str) -> float:
    one_class = _points((200, 0), seed=3)  # a member whose images hold one class only
    offset = logit_offset(loss, one_class.class_counts(2))
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 2)
    start = [p.detach().clone() for p in model.parameters()]
    train(
        model,
        make_loader(one_class, 50, True, None, seed=0),
        5,
        0.1,
        0.9,
        0.0,
        CPU,
        logit_offset=offset,
    )
    return max(
        float((p.detach() - s).abs().max()) for p, s in zip(model.parameters(), start, strict=True)
    )


def test_a_member_with_one_class_hardly_moves_the_weights_under_balanced_softmax() -> None:
    # Execute
    plain = _weight_change("cross_entropy")
    balanced = _weight_change("balanced_softmax")
    # Assert: cross-entropy drives the model to answer the one class; balanced softmax
    # finds nothing to learn about telling classes apart
    assert plain > 0.5
    assert balanced < plain / 50
