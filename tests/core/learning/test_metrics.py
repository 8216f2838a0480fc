"""Metrics against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from fractofl.core.learning.metrics import accuracy, confusion_matrix, macro_f1, precision_recall_f1


def test_confusion_accuracy_and_macro_f1_by_hand() -> None:
    # Prepare: class 0 all right, class 1 half right, class 2 never present nor predicted.
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 0, 1, 0])
    # Execute
    matrix = confusion_matrix(y_true, y_pred, 3)
    precision, recall, _ = precision_recall_f1(matrix)
    # Assert
    assert matrix.tolist() == [[2, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert accuracy(matrix) == pytest.approx(0.75)
    assert precision[:2] == pytest.approx([2 / 3, 1.0])
    assert recall[:2] == pytest.approx([1.0, 0.5])
    # F1: class 0 = 0.8, class 1 = 2/3; class 2 is left out of the mean.
    assert macro_f1(matrix) == pytest.approx((0.8 + 2 / 3) / 2)


def test_empty_matrix_scores_zero() -> None:
    assert accuracy(np.zeros((2, 2), dtype=np.int64)) == 0.0
    assert macro_f1(np.zeros((2, 2), dtype=np.int64)) == 0.0
