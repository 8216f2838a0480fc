"""Classification metrics in plain numpy: confusion matrix, accuracy, macro-F1."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``[true, predicted]`` as an int64 (num_classes, num_classes) matrix."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def accuracy(matrix: np.ndarray) -> float:
    """Fraction of correct predictions (0 for an empty matrix)."""
    total = matrix.sum()
    return float(np.trace(matrix) / total) if total else 0.0


def precision_recall_f1(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1; 0 where a class is never predicted or present."""
    true_pos = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    actual = matrix.sum(axis=1).astype(np.float64)
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    recall = np.divide(true_pos, actual, out=np.zeros_like(true_pos), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(true_pos), where=denom > 0)
    return precision, recall, f1


def macro_f1(matrix: np.ndarray) -> float:
    """F1 averaged over the classes that occur in the labels or the predictions."""
    _, _, f1 = precision_recall_f1(matrix)
    seen = (matrix.sum(axis=0) + matrix.sum(axis=1)) > 0
    return float(f1[seen].mean()) if seen.any() else 0.0
