"""A member's evaluation reply: how the global model does on the member's own validation
split, as the member sends it and as the coordinator reads it back.

Only numbers leave: loss, accuracy, macro-F1, per-class recall and, unless the member's
policy withholds them (``share_class_counts: false``), its validation images per class.
A class with no validation image has no recall; it is sent as :data:`NO_RECALL`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from fractofl.core.wire.update_protocol import EXAMPLES_KEY

VAL_LOSS_KEY = "val-loss"
VAL_ACCURACY_KEY = "val-accuracy"
VAL_MACRO_F1_KEY = "val-macro-f1"
CLASS_RECALL_KEY = "val-class-recall"
CLASS_COUNT_KEY = "val-class-count"
PARTITION_METRIC_KEY = "member-partition"  # a simulated member's partition; -1 for a real one
NO_PARTITION = -1
NO_RECALL = -1.0
PER_CLASS_KEYS = (CLASS_RECALL_KEY, CLASS_COUNT_KEY)

Metrics = dict[str, int | float | list[int] | list[float]]


@dataclass(frozen=True)
class MemberEvaluation:
    """One member's scores of one global model on its validation split (None: not sent,
    e.g. filtered by the member's ``send_metrics``)."""

    examples: int
    loss: float | None
    accuracy: float | None
    macro_f1: float | None
    recall: tuple[float | None, ...] | None
    """Per class, in the run's class order; None for a class without validation images."""
    counts: tuple[int, ...] | None
    """Validation images per class; None when the member withheld them."""
    partition: int | None
    """The simulated member's partition; None for a real member."""


def evaluation_metrics(
    evaluation: MemberEvaluation | None, num_classes: int, partition: int | None
) -> Metrics:
    """The reply's metrics for ``evaluation`` (None: the member has no validation split,
    and its reply weighs nothing in the mean)."""
    values: Metrics = {
        EXAMPLES_KEY: 0,
        VAL_LOSS_KEY: 0.0,
        VAL_ACCURACY_KEY: 0.0,
        VAL_MACRO_F1_KEY: 0.0,
        CLASS_RECALL_KEY: [NO_RECALL] * num_classes,
        CLASS_COUNT_KEY: [0] * num_classes,
    }
    if evaluation is not None:
        values = {
            EXAMPLES_KEY: evaluation.examples,
            VAL_LOSS_KEY: evaluation.loss or 0.0,
            VAL_ACCURACY_KEY: evaluation.accuracy or 0.0,
            VAL_MACRO_F1_KEY: evaluation.macro_f1 or 0.0,
            CLASS_RECALL_KEY: [NO_RECALL if r is None else r for r in evaluation.recall or ()],
            CLASS_COUNT_KEY: list(evaluation.counts or ()),
        }
    values[PARTITION_METRIC_KEY] = NO_PARTITION if partition is None else partition
    return values


def _number(metrics: Mapping[str, object], key: str) -> float | None:
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def _numbers(metrics: Mapping[str, object], key: str, num_classes: int) -> list[float] | None:
    value = metrics.get(key)
    if not isinstance(value, list) or len(value) != num_classes:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return None
    return [float(v) for v in value]


def read_evaluation(metrics: Mapping[str, object], num_classes: int) -> MemberEvaluation:
    """A member's evaluation from its reply's metrics; what is missing or malformed (a
    list of another length than the run's classes) is None, never guessed."""
    examples = int(_number(metrics, EXAMPLES_KEY) or 0)
    recall = _numbers(metrics, CLASS_RECALL_KEY, num_classes)
    counts = _numbers(metrics, CLASS_COUNT_KEY, num_classes)
    partition = _number(metrics, PARTITION_METRIC_KEY)
    scored = examples > 0  # a member without a validation split sends zeros
    return MemberEvaluation(
        examples=examples,
        loss=_number(metrics, VAL_LOSS_KEY) if scored else None,
        accuracy=_number(metrics, VAL_ACCURACY_KEY) if scored else None,
        macro_f1=_number(metrics, VAL_MACRO_F1_KEY) if scored else None,
        recall=None if recall is None else tuple(r if r >= 0 else None for r in recall),
        counts=None if counts is None else tuple(int(n) for n in counts),
        partition=None if partition is None or partition < 0 else int(partition),
    )
