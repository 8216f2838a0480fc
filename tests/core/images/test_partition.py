"""Dirichlet and IID splits of a labelled pool across members."""

from __future__ import annotations

import numpy as np
import pytest

from fractofl.core.images.partition import PartitionError, partition_indices


def _labels(per_class: int = 100, classes: int = 4) -> np.ndarray:
    return np.repeat(np.arange(classes), per_class)


def test_partition_covers_every_example_once() -> None:
    labels = _labels()
    parts = partition_indices(labels, 5, "dirichlet", 0.5, seed=1, min_per_member=5)
    joined = np.concatenate(parts)
    assert len(parts) == 5
    assert sorted(joined.tolist()) == list(range(len(labels)))
    assert min(len(p) for p in parts) >= 5


def test_small_alpha_is_more_skewed_than_large_alpha() -> None:
    # The share of a member's largest class grows as alpha shrinks (non-IID).
    labels = _labels(per_class=500)

    def dominance(alpha: float) -> float:
        shares = []
        for seed in range(10):
            for part in partition_indices(labels, 4, "dirichlet", alpha, seed, 1):
                counts = np.bincount(labels[part], minlength=4)
                shares.append(counts.max() / counts.sum())
        return float(np.mean(shares))

    assert dominance(0.1) > dominance(0.5) > dominance(100.0)
    assert dominance(100.0) < 0.35  # near the IID value of 0.25


def test_iid_gives_equal_sizes_and_balanced_classes() -> None:
    labels = _labels(per_class=200)
    parts = partition_indices(labels, 4, "iid", 0.5, seed=0, min_per_member=1)
    assert [len(p) for p in parts] == [200] * 4
    for part in parts:
        assert np.bincount(labels[part], minlength=4).min() > 30


def test_same_seed_same_split() -> None:
    labels = _labels()
    a = partition_indices(labels, 3, "dirichlet", 0.5, seed=9, min_per_member=5)
    b = partition_indices(labels, 3, "dirichlet", 0.5, seed=9, min_per_member=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("members", "method", "alpha", "minimum", "message"),
    [
        (0, "dirichlet", 0.5, 1, "at least 1"),
        (4, "kmeans", 0.5, 1, "valid: dirichlet, iid"),
        (4, "dirichlet", 0.0, 1, "must be positive"),
        (4, "dirichlet", 0.5, 200, "cannot give 4 members 200 each"),
    ],
)
def test_impossible_splits_explain_themselves(
    members: int, method: str, alpha: float, minimum: int, message: str
) -> None:
    with pytest.raises(PartitionError, match=message):
        partition_indices(_labels(), members, method, alpha, seed=0, min_per_member=minimum)
