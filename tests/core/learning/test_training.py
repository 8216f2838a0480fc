"""Plain training functions: learning happens, FedProx's term holds weights near start."""

from __future__ import annotations

import torch

from fractofl.core.images.labelled import LabelledTensors, make_loader
from fractofl.core.learning.device import resolve_device
from fractofl.core.learning.training import evaluate, train
from fractofl.core.model.architectures import build_model


def _separable(n: int = 64) -> LabelledTensors:
    # Class 0 dark images, class 1 bright ones: trivially learnable.
    generator = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = (
        torch.randn(n, 1, 16, 16, generator=generator) * 0.1
        + (y.float() * 2 - 1)[:, None, None, None]
    )
    return LabelledTensors(x, y)


def _drift(mu: float) -> float:
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=2, width=4)
    start = [p.detach().clone() for p in model.parameters()]
    loader = make_loader(_separable(), 16, True, None, seed=0)
    train(model, loader, 3, 0.1, 0.0, 0.0, resolve_device("cpu"), proximal_mu=mu)
    with torch.no_grad():
        moved = zip(model.parameters(), start, strict=True)
        return float(sum(torch.sum((p - s) ** 2) for p, s in moved))


def test_training_learns_a_separable_task() -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=2, width=4)
    data = _separable()
    result = train(
        model, make_loader(data, 16, True, None, 0), 5, 0.1, 0.9, 0.0, resolve_device("cpu")
    )
    scored = evaluate(model, make_loader(data, 16, False, None, 0), 2, resolve_device("cpu"))
    assert result.examples == 64
    assert scored.accuracy >= 0.95


def test_proximal_term_keeps_weights_closer_to_the_global_model() -> None:
    assert _drift(mu=10.0) < 0.5 * _drift(mu=0.0)
