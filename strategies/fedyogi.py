"""FedYogi (Reddi et al., 2021, "Adaptive Federated Optimization",
https://arxiv.org/abs/2003.00295): Yogi's additive second-moment update on the server."""

from __future__ import annotations

from flwr.serverapp.strategy import FedYogi

from fractofl.strategies.common import CommonStrategyArgs


def build_fedyogi(
    common: CommonStrategyArgs,
    eta: float = 0.01,
    eta_l: float = 0.05,
    beta_1: float = 0.9,
    beta_2: float = 0.99,
    tau: float = 0.001,
) -> FedYogi:
    """Server learning rate ``eta``, moments ``beta_1``/``beta_2``, adaptivity ``tau``."""
    return FedYogi(
        **common.flower_kwargs(), eta=eta, eta_l=eta_l, beta_1=beta_1, beta_2=beta_2, tau=tau
    )
