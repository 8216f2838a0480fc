"""FedAdagrad (Reddi et al., 2021, "Adaptive Federated Optimization",
https://arxiv.org/abs/2003.00295): Adagrad on the server over the averaged member update."""

from __future__ import annotations

from flwr.serverapp.strategy import FedAdagrad

from fractofl.strategies.common import CommonStrategyArgs


def build_fedadagrad(
    common: CommonStrategyArgs, eta: float = 0.01, eta_l: float = 0.05, tau: float = 0.001
) -> FedAdagrad:
    """Server learning rate ``eta`` and adaptivity ``tau``."""
    return FedAdagrad(**common.flower_kwargs(), eta=eta, eta_l=eta_l, tau=tau)
