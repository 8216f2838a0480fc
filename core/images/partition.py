"""Splitting a labelled pool across members: Dirichlet over classes (non-IID) or IID.

The Dirichlet split is the usual one in federated-learning papers (Hsu et al., 2019,
"Measuring the Effects of Non-Identical Data Distribution"): for each class, the share
of each member is drawn from Dir(alpha); small alpha means members hold few classes.
"""

from __future__ import annotations

import numpy as np

DIRICHLET = "dirichlet"
IID = "iid"
PARTITIONS = (DIRICHLET, IID)
MAX_DRAWS = 1000


class PartitionError(ValueError):
    """The pool cannot be split as asked."""


def partition_indices(
    labels: np.ndarray,
    members: int,
    method: str,
    alpha: float,
    seed: int,
    min_per_member: int,
) -> list[np.ndarray]:
    """Indices of ``labels`` held by each member, each array sorted.

    Raises
    ------
    PartitionError
        For an unknown method, too few examples, or when no Dirichlet draw in
        ``MAX_DRAWS`` gives every member ``min_per_member`` examples.
    """
    if members < 1:
        raise PartitionError(f"federation.members={members} must be at least 1")
    if len(labels) < members * min_per_member:
        raise PartitionError(
            f"{len(labels)} examples cannot give {members} members {min_per_member} each "
            "(data.min_per_member); generate more (data.synth.per_class) or use fewer members"
        )
    rng = np.random.default_rng(seed)
    if method == IID:
        return [np.sort(part) for part in np.array_split(rng.permutation(len(labels)), members)]
    if method != DIRICHLET:
        raise PartitionError(f"unknown data.partition {method!r}; valid: {', '.join(PARTITIONS)}")
    if alpha <= 0:
        raise PartitionError(f"data.alpha={alpha} must be positive")
    for _ in range(MAX_DRAWS):
        parts = _dirichlet_draw(labels, members, alpha, rng)
        if min(len(p) for p in parts) >= min_per_member:
            return parts
    raise PartitionError(
        f"no Dirichlet split with alpha={alpha} gave each of {members} members "
        f"{min_per_member} examples in {MAX_DRAWS} draws; raise data.alpha or "
        "data.synth.per_class, or lower data.min_per_member"
    )


def _dirichlet_draw(
    labels: np.ndarray, members: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    buckets: list[list[np.ndarray]] = [[] for _ in range(members)]
    for label in np.unique(labels):
        indices = rng.permutation(np.flatnonzero(labels == label))
        shares = rng.dirichlet(np.full(members, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(indices)).astype(int)
        for member, chunk in enumerate(np.split(indices, cuts)):
            buckets[member].append(chunk)
    return [np.sort(np.concatenate(chunks)) for chunks in buckets]
