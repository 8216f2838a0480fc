"""Calibrated confidence: temperature scaling (Guo et al., ICML 2017) and the expected
calibration error.

A network's softmax is usually over-confident. One temperature ``T``, fitted on held-out
images by minimising the negative log-likelihood of ``softmax(scores / T)``, fixes most
of it without changing any answer (the order of the scores stays). The scores are the
network's logits, or for a physical-scale model the mean of its tiles' log-probabilities
(what evaluation and serving already rank by).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fractofl.core.images.tiles import tile_mean_log_probabilities

ECE_BINS = 15  # equal-width confidence bins, as Guo et al. report ECE
TEMPERATURE_RANGE = (0.05, 20.0)  # a fitted temperature is kept inside this range
_FIT_STEPS = 100


def image_scores(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, classes) scores: logits, or the tiles' mean log-probabilities for (B, T, C, S, S)."""
    if images.dim() == 5:
        return tile_mean_log_probabilities(model, images)
    return model(images).float()


@torch.no_grad()
def collect_scores(
    model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image's scores and label (on the CPU)."""
    model.to(device).eval()
    scores, labels = [], []
    for images, targets in loader:
        scores.append(image_scores(model, images.to(device)).cpu())
        labels.append(targets.cpu())
    return torch.cat(scores), torch.cat(labels)


def calibrated(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """Class probabilities of ``scores`` at ``temperature``."""
    return torch.softmax(scores / temperature, dim=1)


def fit_temperature(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature that minimises the negative log-likelihood of ``labels``."""
    low, high = TEMPERATURE_RANGE
    log_t = torch.zeros(1, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.1, max_iter=_FIT_STEPS)

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        value = F.cross_entropy(scores / log_t.exp(), labels)
        value.backward()
        return value

    optimiser.step(loss)
    fitted = float(log_t.detach().exp())
    return min(max(fitted, low), high) if math.isfinite(fitted) else 1.0


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

    def metrics(self) -> dict[str, float]:
        """What a published version's signed metrics carry of it."""
        return {
            "temperature": self.temperature,
            "ece": self.ece,
            "ece_calibrated": self.ece_calibrated,
        }


def calibrate(scores: torch.Tensor, labels: torch.Tensor) -> Calibration:
    """Fit the temperature on every image; measure its effect by fitting on one half
    and measuring on the other, both ways."""
    halves = (torch.arange(len(labels)) % 2 == 0, torch.arange(len(labels)) % 2 == 1)
    crossed = torch.empty_like(scores)
    for fit_on, measure_on in (halves, halves[::-1]):
        if fit_on.any() and measure_on.any():
            temperature = fit_temperature(scores[fit_on], labels[fit_on])
            crossed[measure_on] = calibrated(scores[measure_on], temperature)
        else:
            crossed[measure_on] = calibrated(scores[measure_on], 1.0)
    return Calibration(
        temperature=fit_temperature(scores, labels),
        ece=expected_calibration_error(calibrated(scores, 1.0), labels),
        ece_calibrated=expected_calibration_error(crossed, labels),
        images=len(labels),
    )
