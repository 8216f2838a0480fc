"""Temperature scaling and the expected calibration error, on scores whose true
calibration is known."""

from __future__ import annotations

import pytest
import torch

from fractofl.core.learning.calibration import (
    TEMPERATURE_RANGE,
    calibrate,
    calibrated,
    energy,
    energy_threshold,
    expected_calibration_error,
    fit_temperature,
)
from tests.conftest import fresh_python


def _sampled(
    temperature: float, images: int = 6000, classes: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores, and labels drawn from softmax(scores / temperature): calibrated at it."""
    generator = torch.Generator().manual_seed(7)
    scores = torch.randn(images, classes, generator=generator) * 3.0
    labels = torch.multinomial(calibrated(scores, temperature), 1, generator=generator)[:, 0]
    return scores, labels


def test_the_fitted_temperature_is_the_one_the_labels_were_drawn_at() -> None:
    for truth in (0.5, 2.5):
        scores, labels = _sampled(truth)
        assert fit_temperature(scores, labels) == pytest.approx(truth, rel=0.1)


def test_the_fitted_temperature_minimises_the_likelihood_within_the_range() -> None:
    scores, labels = _sampled(1.7, images=500)

    def nll(temperature: float) -> float:
        return float(torch.nn.functional.cross_entropy(scores.double() / temperature, labels))

    found = fit_temperature(scores, labels)
    assert nll(found) <= min(nll(found * 0.99), nll(found * 1.01))
    # scores that order every image right want the coldest temperature allowed
    right = torch.nn.functional.one_hot(labels, 4).float() * 5.0
    assert fit_temperature(right, labels) == pytest.approx(TEMPERATURE_RANGE[0], rel=1e-6)
    assert fit_temperature(torch.full((4, 4), float("nan")), labels[:4]) == 1.0


def test_fitting_a_temperature_does_not_import_torch_s_compiler() -> None:
    # torch.optim's first step imports torch._dynamo (seconds); the coordinator, which
    # fits a temperature every round and trains nothing, must not pay for it
    code = (
        "import sys, torch\n"
        "from fractofl.core.learning.calibration import fit_temperature\n"
        "fit_temperature(torch.randn(64, 4), torch.randint(0, 4, (64,)))\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    assert fresh_python(code) == ["False"]


def test_over_confident_scores_have_a_large_error_that_scaling_removes() -> None:
    # Prepare: labels drawn at temperature 3, scores read as if at 1 (over-confident)
    scores, labels = _sampled(3.0)
    # Execute
    found = calibrate(scores, labels, ood_coverage=0.9)
    # Assert
    assert found.ece > 0.15
    assert found.ece_calibrated < 0.03
    assert found.temperature == pytest.approx(3.0, rel=0.1)
    assert found.images == len(labels)
    assert set(found.metrics()) == {
        "temperature",
        "ece",
        "ece_calibrated",
        "ood_energy_threshold",
        "ood_coverage",
    }
    # the threshold leaves 90 % of the images at or under it
    under = energy(scores, found.temperature) <= found.ood_energy_threshold
    assert float(under.float().mean()) == pytest.approx(0.9, abs=0.001)


def test_calibrated_probabilities_have_almost_no_error_and_keep_every_answer() -> None:
    scores, labels = _sampled(1.0)
    probabilities = calibrated(scores, 1.0)
    assert expected_calibration_error(probabilities, labels) < 0.03
    hotter = calibrated(scores, 4.0)
    assert torch.equal(hotter.argmax(dim=1), probabilities.argmax(dim=1))
    assert float(hotter.max(dim=1).values.mean()) < float(probabilities.max(dim=1).values.mean())


def test_a_confident_and_always_right_model_has_no_error() -> None:
    probabilities = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(probabilities, torch.tensor([0, 1])) == 0.0
    assert expected_calibration_error(probabilities, torch.tensor([1, 0])) == 1.0


def test_images_unlike_any_class_have_a_higher_energy() -> None:
    # Prepare: confident scores (one class far ahead) and flat ones (no class stands out)
    confident = torch.tensor([[9.0, 0.0, 0.0, 0.0], [0.0, 8.0, 0.0, 0.0]])
    flat = torch.zeros(2, 4)
    # Execute
    threshold = energy_threshold(energy(confident, 1.0), coverage=1.0)
    # Assert
    assert (energy(flat, 1.0) > threshold).all()
    with pytest.raises(ValueError, match=r"registry.ood_coverage=0 must be above 0"):
        energy_threshold(energy(flat, 1.0), coverage=0)
