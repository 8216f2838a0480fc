"""SCAFFOLD's arithmetic: the step sum is what PyTorch's SGD really moves, and a federation
of members with different optima, curvatures and numbers of local steps reaches the
federation's optimum with the control variates read off the global model's move, where
FedAvg stops short of it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fractofl.core.learning.control_variates import (
    correction,
    federation_control,
    member_control,
    sgd_step_sum,
)


@pytest.mark.parametrize(("momentum", "steps"), [(0.0, 1), (0.0, 9), (0.9, 1), (0.9, 7), (0.5, 30)])
def test_the_step_sum_is_how_far_pytorch_sgd_moves_per_unit_gradient(
    momentum: float, steps: int
) -> None:
    # Execute: PyTorch's SGD on a constant gradient of 1, from a fresh momentum buffer
    weight = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([weight], lr=0.03, momentum=momentum)
    for _ in range(steps):
        optimizer.zero_grad()
        weight.sum().backward()
        optimizer.step()
    # Assert
    assert -float(weight.detach()) == pytest.approx(sgd_step_sum(0.03, momentum, steps), rel=1e-5)


def test_a_step_sum_refuses_what_is_no_round() -> None:
    with pytest.raises(ValueError, match="steps >= 1"):
        sgd_step_sum(0.1, 0.0, 0)
    with pytest.raises(ValueError, match="momentum"):
        sgd_step_sum(0.1, 1.0, 3)


def _federation(scaffold: bool, momentum: float, rounds: int = 300) -> float:
    """Three members with quadratic losses ``a_i/2 (w - b_i)^2``, 10, 30 and 60 examples
    and 4, 12 and 24 local steps; returns the distance to the federation's optimum."""
    rng = np.random.default_rng(0)
    a = [rng.uniform(0.2, 1.0, 4) for _ in range(3)]
    b = [rng.normal(0.0, 3.0, 4) for _ in range(3)]
    examples, steps, lr = np.array([10, 30, 60]), [4, 12, 24], 0.05
    share = examples / examples.sum()
    optimum = sum(s * ai * bi for s, ai, bi in zip(share, a, b, strict=True)) / sum(
        s * ai for s, ai in zip(share, a, strict=True)
    )
    x = {"w": np.zeros(4, np.float32)}
    previous: dict[str, np.ndarray] | None = None
    mean_step_sum = 0.0
    controls: list[dict[str, np.ndarray] | None] = [None] * 3
    for _ in range(rounds):
        deltas, sums = [], []
        for i in range(3):
            applied = None
            if scaffold and previous is not None:
                applied = correction(federation_control(x, previous, mean_step_sum), controls[i])
            y, velocity = x["w"].astype(np.float64), np.zeros(4)
            for _ in range(steps[i]):
                gradient = a[i] * (y - b[i]) + (applied["w"] if applied else 0.0)
                velocity = momentum * velocity + gradient
                y = y - lr * velocity
            delta = {"w": (y - x["w"]).astype(np.float32)}
            sums.append(sgd_step_sum(lr, momentum, steps[i]))
            if scaffold:
                controls[i] = member_control(delta, ["w"], sums[-1], applied)
            deltas.append(delta["w"])
        # FedAvg weighs by examples; SCAFFOLD here by examples per unit of step sum
        weights = share if not scaffold else examples / np.array(sums)
        weights = weights / weights.sum()
        previous = x
        moved = sum(w * d for w, d in zip(weights, deltas, strict=True))
        x = {"w": (x["w"] + moved).astype(np.float32)}
        mean_step_sum = float(np.dot(weights, sums))
    return float(np.abs(x["w"] - optimum).max())


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_control_variates_from_the_global_move_reach_the_federations_optimum(
    momentum: float,
) -> None:
    # Execute
    fedavg, scaffold = _federation(False, momentum), _federation(True, momentum)
    # Assert: FedAvg's local steps pull it off the optimum; SCAFFOLD's do not
    assert fedavg > 0.1
    assert scaffold < 1e-3


def test_a_member_without_a_control_is_corrected_by_the_federations_alone() -> None:
    federation = {"w": np.array([1.0, -2.0], np.float32)}
    assert np.array_equal(correction(federation, None)["w"], federation["w"])
    member = {"w": np.array([0.5, 0.5], np.float32)}
    assert np.array_equal(correction(federation, member)["w"], [0.5, -2.5])
