"""Central differential privacy with member-side clipping (``privacy.dp=true``).

DP-FedAvg (McMahan et al., "Learning Differentially Private Recurrent Language Models",
ICLR 2018; Flower's ``DifferentialPrivacyClientSideFixedClipping``): every member clips
its update to L2 norm ``C`` (it reads ``C`` from the round's config, Flower's
``clipping_norm`` key), the coordinator takes the unweighted mean of the ``n`` accepted
updates and adds Gaussian noise of standard deviation ``z C / n``, and Flower's RDP
accountant composes one Gaussian release of noise multiplier ``z`` per round.

Flower's own wrapper cannot be used as it is: it requires Flower's unmodified FedAvg
(ours aggregates decoded deltas behind the update guard), a fixed number of replies
(ours tolerates members that drop out), and one configuration per round (ours re-sends a
round that got too few replies). The clipping, the noise and the accounting are
Flower's functions (``flwr.supercore.differential_privacy``, ``flwr.serverapp``'s
``RdpAccountant``); this module only wires them to the guard.

The noise goes on every floating-point array, BatchNorm's running statistics included
(they are computed from member data too); a running variance that the noise pushes below
zero is clamped to zero, which is post-processing and costs no privacy. Integer buffers
(BatchNorm's batch counters) are not sent: members zero their change.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import (
    GaussianPrivacyEvent,
    Grid,
    NeighboringRelation,
    PrivacyConfig,
    RdpAccountant,
    SamplingMethod,
)
from flwr.supercore.differential_privacy import add_gaussian_noise_inplace, compute_stdv

from fractofl.core.config.run_config import RunConfig
from fractofl.core.wire.update_protocol import CLIPPING_NORM_KEY, UNIT_WEIGHT_KEY
from fractofl.strategies.guard import UpdateGuard
from fractofl.strategies.npy_arrays import array_of
from fractofl.strategies.wrapping import WrappingStrategy

log = logging.getLogger("fractofl")

DP_STRATEGIES = ("fedavg", "fedprox")
"""Strategies whose aggregate is the mean that the noise is calibrated to; a server
optimiser or a robust aggregate (median, Krum, ...) is not."""
RUNNING_VARIANCE_SUFFIX = "running_var"


class PrivacySettingsError(ValueError):
    """``privacy.*`` settings, or a strategy or compression, that DP cannot work with."""


class PrivacyBudgetExhaustedError(RuntimeError):
    """The next round would spend more than ``privacy.max_epsilon``."""


@dataclass(frozen=True)
class PrivacySpent:
    """The cumulative (epsilon, delta) after ``releases`` noised aggregates."""

    epsilon: float
    delta: float
    releases: int


def check_dp_settings(cfg: RunConfig) -> None:
    """Refuse what DP-FedAvg cannot do, naming the setting at fault."""
    strategy, compression = cfg.strategy.name, cfg.updates.compression
    noise_multiplier, clipping_norm = cfg.privacy.noise_multiplier, cfg.privacy.clipping_norm
    if strategy not in DP_STRATEGIES:
        raise PrivacySettingsError(
            f"privacy.dp=true needs a mean: strategy={strategy!r} is not one of "
            f"{', '.join(DP_STRATEGIES)} (robust aggregates and server optimisers are not "
            "calibrated to the noise); choose strategy=fedavg or set privacy.dp=false"
        )
    if compression != "none":
        raise PrivacySettingsError(
            f"privacy.dp=true needs updates.compression=none, not {compression!r}: "
            "quantisation after clipping can raise an update's norm above privacy.clipping_norm"
        )
    if noise_multiplier <= 0 or clipping_norm <= 0:
        raise PrivacySettingsError(
            f"privacy.noise_multiplier={noise_multiplier} and privacy.clipping_norm="
            f"{clipping_norm} must both be > 0"
        )


def rdp_accountant(population: int, target_delta: float, max_epsilon: float) -> RdpAccountant:
    """Flower's RDP accountant for ``population`` members, every round a release of all
    sampled members without amplification by sampling (Flower's only option with fixed
    clipping)."""
    return RdpAccountant(
        PrivacyConfig(
            target_delta=target_delta,
            population_size=population,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
            max_epsilon=max_epsilon if max_epsilon > 0 else None,
        )
    )


class DifferentialPrivacy(WrappingStrategy):
    """Member-side clipping, coordinator-side noise and accounting around the guard."""

    def __init__(
        self,
        inner: UpdateGuard,
        noise_multiplier: float,
        clipping_norm: float,
        accountant: RdpAccountant,
    ) -> None:
        self.inner = inner
        inner.train_weight_key = UNIT_WEIGHT_KEY  # an unweighted mean: see the module doc
        inner.clipping_bound = clipping_norm  # members clip; the guard checks that they did
        self.noise_multiplier = noise_multiplier
        self.clipping_norm = clipping_norm
        self.accountant = accountant

    def summary(self) -> None:
        """Log the wrapped strategy's settings and the privacy settings."""
        self.inner.summary()
        config = self.accountant.config
        log.info(
            "differential privacy: clipping norm %g, noise multiplier %g, delta %g over %d "
            "members (RDP accountant, no amplification)",
            self.clipping_norm,
            self.noise_multiplier,
            config.target_delta,
            config.population_size,
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Tell members the clipping norm; refuse a round that would exceed the budget."""
        config[CLIPPING_NORM_KEY] = self.clipping_norm
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        limit = self.accountant.config.max_epsilon
        if messages and limit is not None and self.accountant.would_exceed(self._event(1)):
            spent = self.privacy_spent()
            raise PrivacyBudgetExhaustedError(
                f"round {server_round} would exceed privacy.max_epsilon={limit:g} "
                f"(spent so far: epsilon {spent.epsilon:.3f} at delta {spent.delta:g} after "
                f"{spent.releases} rounds); the run stops with the last round's model"
            )
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The guard's unweighted mean of the clipped updates, plus Gaussian noise."""
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        accepted = self.inner.accepted_count
        if arrays is None or accepted == 0:
            return arrays, metrics
        std = compute_stdv(self.noise_multiplier, self.clipping_norm, accepted)
        keys = [k for k, a in arrays.items() if np.issubdtype(a.numpy().dtype, np.floating)]
        noisy = [np.array(arrays[k].numpy(), copy=True) for k in keys]
        add_gaussian_noise_inplace(noisy, std)
        released = {key: array.numpy() for key, array in arrays.items()}
        for key, value in zip(keys, noisy, strict=True):
            if key.endswith(RUNNING_VARIANCE_SUFFIX):
                np.maximum(value, 0.0, out=value)
            released[key] = value
        self.accountant.compose(self._event(accepted))
        spent = self.privacy_spent()
        log.info(
            "round %d: Gaussian noise of std %.4g on the mean of %d clipped updates; privacy "
            "spent: epsilon %.4f at delta %g",
            server_round,
            std,
            accepted,
            spent.epsilon,
            spent.delta,
        )
        return ArrayRecord({k: array_of(v) for k, v in released.items()}), metrics

    def privacy_spent(self) -> PrivacySpent:
        """(epsilon at ``privacy.target_delta``, delta) so far."""
        spent = self.accountant.get_privacy_spent()
        return PrivacySpent(float(spent.epsilon), float(spent.delta), int(spent.num_releases))

    def _event(self, sample_size: int) -> GaussianPrivacyEvent:
        population = self.accountant.config.population_size
        return GaussianPrivacyEvent(
            noise_multiplier=self.noise_multiplier,
            sample_size=min(sample_size, population),
            population_size=population,
        )
