"""FedAvgM (Hsu et al., 2019, "Measuring the Effects of Non-Identical Data Distribution for
Federated Visual Classification", https://arxiv.org/abs/1909.06335): server momentum over the
members' mean update, as Flower ships it.

Flower's ``FedAvgM`` steps from the arrays it produced itself in the round before. Here it
steps from the global model each round sends instead: the update guard puts the plain mean of
the running statistics (BatchNorm) back after the step and restores integer dtypes, so what
the strategy produced is not exactly the global model, and a resumed coordinator has only
the checkpoint's global model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvgM

from fractofl.strategies.common import CommonStrategyArgs


class FedAvgMFromGlobal(FedAvgM):
    """Flower's FedAvgM, stepping from the global model that the round sends."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._restored: dict[str, np.ndarray] | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the round's global model as the point the server step starts from."""
        self.current_arrays = arrays
        if self._restored is not None:
            # Flower keeps the momentum as a list in the model's array order.
            names = list(arrays.keys())
            differ = sorted(set(names) ^ set(self._restored))
            if differ:
                raise ValueError(
                    f"the checkpoint's FedAvgM momentum and the model differ in {differ[:3]}: "
                    "it was saved for another model; start the run again instead of resuming"
                )
            self.momentum_vector = [self._restored[name] for name in names]
            self._restored = None
        return super().configure_train(server_round, arrays, config, grid)

    def momentum_by_name(self) -> dict[str, np.ndarray]:
        """The momentum buffer keyed by array name (empty before the first step)."""
        if self._restored is not None:
            return dict(self._restored)
        if self.momentum_vector is None or self.current_arrays is None:
            return {}
        names = list(self.current_arrays.keys())
        return {
            name: np.array(value, copy=True)
            for name, value in zip(names, self.momentum_vector, strict=True)
        }

    def restore_momentum(self, momentum: dict[str, np.ndarray]) -> None:
        """Put back what :meth:`momentum_by_name` took; it is matched to the model's arrays
        by name when the next round starts."""
        restored = {key: np.array(value, copy=True) for key, value in momentum.items()}
        self._restored = restored or None
        self.momentum_vector = None


def build_fedavgm(
    common: CommonStrategyArgs, server_learning_rate: float = 1.0, server_momentum: float = 0.5
) -> FedAvgMFromGlobal:
    """FedAvgM: server learning rate ``server_learning_rate``, momentum ``server_momentum``
    (a momentum of 0 with a rate of 1 is FedAvg)."""
    for name, value in (
        ("server_learning_rate", server_learning_rate),
        ("server_momentum", server_momentum),
    ):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value < 0:
            raise ValueError(f"strategy.args.{name}={value!r}: must be a finite number >= 0")
    if server_momentum >= 1:
        raise ValueError(
            f"strategy.args.server_momentum={server_momentum}: must be below 1 (the momentum "
            "would never decay); the default is 0.5"
        )
    return FedAvgMFromGlobal(
        **common.flower_kwargs(),
        server_learning_rate=server_learning_rate,
        server_momentum=server_momentum,
    )
