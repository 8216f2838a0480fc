"""FedAdam and FedYogi (Reddi et al., 2021, "Adaptive Federated Optimization",
https://arxiv.org/abs/2003.00295): an adaptive optimiser on the server over the averaged
member update, Adam's second moment for FedAdam, Yogi's additive one for FedYogi.

Both take the same arguments, so one builder makes either; FedAdagrad, which has no
moments, keeps its own module.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.serverapp.strategy import FedAdam, FedYogi

from fractofl.strategies.common import CommonStrategyArgs

FedOptWithMoments = FedAdam | FedYogi
FedOptBuilder = Callable[..., FedOptWithMoments]


def fedopt_builder(kind: type[FedAdam] | type[FedYogi]) -> FedOptBuilder:
    """A strategy factory for ``kind`` whose signature lists the ``strategy.args`` it takes."""

    def build(
        common: CommonStrategyArgs,
        eta: float = 0.01,
        eta_l: float = 0.05,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 0.001,
    ) -> FedOptWithMoments:
        return kind(
            **common.flower_kwargs(), eta=eta, eta_l=eta_l, beta_1=beta_1, beta_2=beta_2, tau=tau
        )

    build.__name__ = f"build_{kind.__name__.lower()}"
    build.__doc__ = (
        f"{kind.__name__}: server learning rate ``eta``, moments ``beta_1``/``beta_2``, "
        "adaptivity ``tau``."
    )
    return build


build_fedadam = fedopt_builder(FedAdam)
build_fedyogi = fedopt_builder(FedYogi)
