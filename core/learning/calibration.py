"""Calibrated confidence: temperature scaling (Guo et al., ICML 2017), the expected
calibration error, and an out-of-distribution score (the energy of Liu et al., NeurIPS
2020) with the threshold that a share of the held-out images stays under.

A network's softmax is usually over-confident. One temperature ``T``, fitted on held-out
images by minimising the negative log-likelihood of ``softmax(scores / T)``, fixes most
of it without changing any answer (the order of the scores stays). The scores are the
network's logits, or for a physical-scale model the mean of its tiles' log-probabilities
(what evaluation and serving already rank by).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ECE_BINS = 15  # equal-width confidence bins, as Guo et al. report ECE
TEMPERATURE_RANGE = (0.05, 20.0)  # a fitted temperature is kept inside this range
_SEARCH_STEPS = 48  # golden-section steps: the log-temperature interval shrinks to ~1e-9
OOD_THRESHOLD_METRIC = "ood_energy_threshold"


def calibrated(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """Class probabilities of ``scores`` at ``temperature``."""
    return torch.softmax(scores / temperature, dim=1)


def energy(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """Each image's energy ``-T logsumexp(scores / T)``: high for images unlike the
    training images (Liu et al. 2020)."""
    return -temperature * torch.logsumexp(scores / temperature, dim=1)


def energy_threshold(energies: torch.Tensor, coverage: float) -> float:
    """The energy that ``coverage`` of ``energies`` (held-out images like the training
    ones) stay at or under; an image above it is out of distribution."""
    if not 0 < coverage <= 1:
        raise ValueError(f"registry.ood_coverage={coverage} must be above 0 and at most 1")
    return float(torch.quantile(energies.double(), coverage))


def fit_temperature(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature in :data:`TEMPERATURE_RANGE` that minimises the negative
    log-likelihood of ``labels`` (1.0 for scores that are not finite).

    A golden-section search over ``log T``: the likelihood is convex in ``1 / T``, so it
    has one minimum in ``log T`` (or its least value at an end of the range). No
    optimiser: the first ``torch.optim`` step of a process imports ``torch._dynamo``,
    about 1.5 s that a coordinator, which trains nothing, would pay for one number.
    """
    scores = scores.detach().double()
    if not bool(torch.isfinite(scores).all()):
        return 1.0

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(scores / math.exp(log_t), labels))

    low, high = (math.log(t) for t in TEMPERATURE_RANGE)
    shrink = (math.sqrt(5.0) - 1.0) / 2.0
    inner_low, inner_high = high - shrink * (high - low), low + shrink * (high - low)
    at_low, at_high = nll(inner_low), nll(inner_high)
    for _ in range(_SEARCH_STEPS):
        if at_low <= at_high:  # the minimum is left of inner_high
            high, inner_high, at_high = inner_high, inner_low, at_low
            inner_low = high - shrink * (high - low)
            at_low = nll(inner_low)
        else:
            low, inner_low, at_low = inner_low, inner_high, at_high
            inner_high = low + shrink * (high - low)
            at_high = nll(inner_high)
    return math.exp((low + high) / 2.0)


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """How far confidence is from accuracy: over :data:`ECE_BINS` equal-width bins of the
    top probability, the mean |accuracy - confidence| weighted by the bin's share."""
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == labels).float()
    edges = torch.linspace(0.0, 1.0, ECE_BINS + 1)
    error = 0.0
    for low, high in itertools.pairwise(edges.tolist()):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            share = float(inside.float().mean())
            error += share * abs(float(correct[inside].mean()) - float(confidence[inside].mean()))
    return error


@dataclass(frozen=True)
class Calibration:
    """The fitted temperature and the calibration error before and after it."""

    temperature: float
    ece: float
    """Of the uncalibrated probabilities, on every image."""
    ece_calibrated: float
    """Of each half's probabilities at the temperature fitted on the other half (so it
    is not measured on the images it was fitted to)."""
    images: int
    ood_energy_threshold: float
    """The energy (at the temperature) that ``coverage`` of the images stay under."""
    ood_coverage: float

    def metrics(self) -> dict[str, float]:
        """What a published version's signed metrics carry of it."""
        return {
            "temperature": self.temperature,
            "ece": self.ece,
            "ece_calibrated": self.ece_calibrated,
            OOD_THRESHOLD_METRIC: self.ood_energy_threshold,
            "ood_coverage": self.ood_coverage,
        }


def calibrate(scores: torch.Tensor, labels: torch.Tensor, ood_coverage: float) -> Calibration:
    """Fit the temperature on every image; measure its effect by fitting on one half
    and measuring on the other, both ways; and the energy threshold ``ood_coverage`` of
    the images stay under at that temperature."""
    halves = (torch.arange(len(labels)) % 2 == 0, torch.arange(len(labels)) % 2 == 1)
    crossed = torch.empty_like(scores)
    for fit_on, measure_on in (halves, halves[::-1]):
        if fit_on.any() and measure_on.any():
            temperature = fit_temperature(scores[fit_on], labels[fit_on])
            crossed[measure_on] = calibrated(scores[measure_on], temperature)
        else:
            crossed[measure_on] = calibrated(scores[measure_on], 1.0)
    temperature = fit_temperature(scores, labels)
    return Calibration(
        temperature=temperature,
        ece=expected_calibration_error(calibrated(scores, 1.0), labels),
        ece_calibrated=expected_calibration_error(crossed, labels),
        images=len(labels),
        ood_energy_threshold=energy_threshold(energy(scores, temperature), ood_coverage),
        ood_coverage=ood_coverage,
    )
