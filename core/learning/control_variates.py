"""SCAFFOLD's control variates (Karimireddy et al., ICML 2020, option II), as arithmetic.

Under a skewed class mix each member's local steps drift towards its own optimum.
SCAFFOLD adds ``c - c_i`` to every local gradient: ``c_i`` is the member's own average
gradient of its last round, ``c`` the federation's, so a member steps along the
federation's direction rather than its own. After training, option II sets
``c_i = (x - y_i) / S_i - (c - c_i)``: the average raw gradient along the member's path,
from its start ``x``, its end ``y_i`` and its step sum ``S_i`` (how far its round moves a
weight per unit of gradient, :func:`sgd_step_sum`).

The paper's coordinator also averages the members' changes of ``c_i`` into ``c`` and sends
``c`` with the model: a model-sized array more each way. Here ``c`` is read off the global
model's move instead. Each member's update is ``y_i - x = -S_i g_i``, ``g_i`` its average
corrected gradient; the coordinator weighs it by ``n_i / S_i`` (examples per unit of step
sum), so the global model moves by ``-S (sum_i w_i g_i)`` with ``w_i = n_i / n`` and ``S``
the examples-weighted harmonic mean of the ``S_i``, which is the mean of the ``S_i`` under
those same weights. The paper's ``c`` after the round is ``sum_i w_i g_i``, so
``c = -(x_new - x) / S`` exactly: members keep the global model they last received and
only the number ``S`` travels. Weighing by ``n_i / S_i`` also removes FedAvg's pull
towards members that take more steps (FedNova, Wang et al. 2020).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

Arrays = Mapping[str, np.ndarray]

SCAFFOLD = "scaffold"  # strategy.name


def sgd_step_sum(lr: float, momentum: float, steps: int) -> float:
    """How far ``steps`` SGD steps move a weight per unit of constant gradient: ``lr *
    steps`` without momentum; with heavy-ball momentum ``mu`` started from zero (PyTorch's
    SGD), ``lr * (steps - mu * (1 - mu**steps) / (1 - mu)) / (1 - mu)``."""
    if steps < 1 or lr <= 0:
        raise ValueError(f"a step sum needs steps >= 1 and lr > 0 (got {steps}, {lr})")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum {momentum} must be in [0, 1)")
    if momentum == 0:
        return lr * steps
    mu = momentum
    return lr * (steps - mu * (1 - mu**steps) / (1 - mu)) / (1 - mu)


def federation_control(
    received: Arrays, previous: Arrays, step_sum: float
) -> dict[str, np.ndarray]:
    """``c = -(x_new - x) / S_mean`` for every array of ``previous`` (the parameters)."""
    if step_sum <= 0:
        raise ValueError(f"the federation's step sum {step_sum} must be positive")
    return {
        key: ((value - received[key]) / step_sum).astype(np.float32)
        for key, value in previous.items()
    }


def correction(federation: Arrays, member: Arrays | None) -> dict[str, np.ndarray]:
    """``c - c_i``, what every local gradient gets added (``c_i`` zero before a member
    has one)."""
    if member is None:
        return {key: np.asarray(value, np.float32) for key, value in federation.items()}
    return {key: (value - member[key]).astype(np.float32) for key, value in federation.items()}


def member_control(
    delta: Arrays, keys: list[str], step_sum: float, applied: Arrays | None
) -> dict[str, np.ndarray]:
    """Option II's ``c_i = -(y_i - x) / S - applied`` for ``keys`` (the parameters):
    ``delta`` is ``y_i - x``, ``applied`` the correction the round's gradients got (None:
    none, the member's first round)."""
    control = {key: (-delta[key] / step_sum).astype(np.float32) for key in keys}
    if applied is not None:
        for key in keys:
            control[key] -= applied[key]
    return control
