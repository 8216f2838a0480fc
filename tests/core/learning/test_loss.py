"""The training loss (``train.loss``): balanced softmax's logit offset, and what it does
to a model trained on a skewed split (the label skew of a member that holds mostly one
class)."""

from __future__ import annotations

import math

import pytest
import torch

from fractofl.core.images.labelled import LabelledTensors, make_loader
from fractofl.core.learning.loss import logit_offset
from fractofl.core.learning.training import evaluate, train

CPU = torch.device("cpu")
FLOOR = 0.01  # train.balanced_softmax_floor's default


def test_cross_entropy_adds_nothing_and_balanced_softmax_adds_log_frequencies() -> None:
    assert logit_offset("cross_entropy", [5, 0, 3], FLOOR) is None
    offset = logit_offset("balanced_softmax", [6, 0, 2], FLOOR)
    assert offset is not None
    expected = [math.log(0.75), math.log(FLOOR), math.log(0.25)]
    assert offset.tolist() == pytest.approx(expected)
    # a class rarer than the floor counts at the floor; a floor of 1 is cross-entropy
    rare = logit_offset("balanced_softmax", [999, 1], 0.05)
    assert rare is not None
    assert rare.tolist() == pytest.approx([math.log(0.999), math.log(0.05)], rel=1e-4)
    plain = logit_offset("balanced_softmax", [6, 0, 2], 1.0)
    assert plain is not None and plain.tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("loss", "counts", "floor", "said"),
    [
        ("focal", [1, 1], FLOOR, "train.loss='focal'; valid: cross_entropy, balanced_softmax"),
        ("balanced_softmax", [0, 0], FLOOR, "all are 0"),
        ("balanced_softmax", [1, 1], 0.0, r"train.balanced_softmax_floor=0.0 must be above 0"),
        ("balanced_softmax", [1, 1], 1.5, r"train.balanced_softmax_floor=1.5 must be above 0"),
    ],
)
def test_an_unknown_loss_an_empty_split_or_a_floor_out_of_range_is_refused(
    loss: str, counts: list[int], floor: float, said: str
) -> None:
    with pytest.raises(ValueError, match=said):
        logit_offset(loss, counts, floor)


def _points(per_class: tuple[int, int], seed: int) -> LabelledTensors:
    # Two overlapping Gaussian classes in 2-D (means -0.5 and +0.5 along both axes).
    generator = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    x = torch.randn(len(y), 2, generator=generator) + (y.float() - 0.5)[:, None]
    return LabelledTensors(x, y)


def _minority_recall(loss: str) -> float:
    skewed = _points((380, 20), seed=1)  # a member that holds mostly class 0
    offset = logit_offset(loss, skewed.class_counts(2), FLOOR)
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


def _trained_on_one_class(loss: str, floor: float) -> tuple[float, float]:
    """A member whose images hold class 0 only, trained from the same start: the largest
    change of any weight, and the mean lead of class 0's logit over class 1's on its
    images afterwards."""
    one_class = _points((200, 0), seed=3)
    offset = logit_offset(loss, one_class.class_counts(2), floor)
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 2)
    start = [p.detach().clone() for p in model.parameters()]
    loader = make_loader(one_class, 50, True, None, seed=0)
    train(model, loader, 20, 0.1, 0.9, 0.0, CPU, logit_offset=offset)
    change = max(
        float((p.detach() - s).abs().max()) for p, s in zip(model.parameters(), start, strict=True)
    )
    with torch.no_grad():
        logits = model(one_class.x)
    return change, float((logits[:, 0] - logits[:, 1]).mean())


def test_the_floor_sets_how_much_a_member_with_one_class_teaches() -> None:
    # Execute: the same one-class member under cross-entropy and under balanced softmax
    # with the default floor and with a tiny one
    plain_change, plain_lead = _trained_on_one_class("cross_entropy", FLOOR)
    floor_change, floor_lead = _trained_on_one_class("balanced_softmax", FLOOR)
    tiny_change, tiny_lead = _trained_on_one_class("balanced_softmax", 1e-4)
    # Assert: cross-entropy drives its class's lead far up (toward answering it for every
    # image); with the floor the member still teaches that its images are not of the
    # class it lacks, much less strongly; with a tiny floor it hardly moves the weights
    assert plain_lead > 3 * floor_lead
    assert floor_lead > 0.5
    assert tiny_lead < floor_lead - 1
    assert tiny_change < plain_change / 50
    assert tiny_change < floor_change / 5
