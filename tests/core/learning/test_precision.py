"""Mixed-precision training (``train.mixed_precision``): what each setting means on each
device, and bfloat16 autocast training on this CPU (the CUDA float16 path: bench GPU check)."""

from __future__ import annotations

import pytest
import torch

from fractofl.core.images.labelled import LabelledTensors, make_loader
from fractofl.core.learning.precision import FULL_PRECISION, Precision, precision_for
from fractofl.core.learning.training import evaluate, train
from fractofl.core.model.architectures import build_model

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize(
    ("setting", "device", "expected"),
    [
        ("auto", CPU, FULL_PRECISION),
        ("auto", CUDA, Precision(torch.float16, scaled=True)),
        ("off", CUDA, FULL_PRECISION),
        ("bfloat16", CPU, Precision(torch.bfloat16)),
        ("float16", CUDA, Precision(torch.float16, scaled=True)),
    ],
)
def test_each_setting_means_one_precision_per_device(
    setting: str, device: torch.device, expected: Precision
) -> None:
    assert precision_for(setting, device) == expected


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("float16", "needs a CUDA device, and this member trains on cpu: use auto"),
        ("half", "train.mixed_precision='half': choose one of auto, off, float16, bfloat16"),
    ],
)
def test_a_precision_this_device_cannot_train_in_is_refused(setting: str, said: str) -> None:
    with pytest.raises(ValueError) as refused:
        precision_for(setting, CPU)
    assert said in str(refused.value)


def _images(n: int = 64) -> LabelledTensors:
    # Class 0 dark, class 1 bright, with noise: learnable in a few passes.
    generator = torch.Generator().manual_seed(1)
    y = torch.arange(n) % 2
    x = (
        torch.randn(n, 1, 16, 16, generator=generator) * 0.3
        + (y.float() - 0.5)[:, None, None, None]
    )
    return LabelledTensors(x, y)


def _trained(precision: Precision) -> tuple[torch.nn.Module, float]:
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=2, width=4)
    loader = make_loader(_images(), 16, True, None, seed=0)
    train(model, loader, 4, 0.1, 0.9, 0.0, CPU, precision=precision)
    scored = evaluate(model, make_loader(_images(), 16, False, None, 0), 2, CPU)
    return model, scored.accuracy


def test_bfloat16_training_learns_with_float32_weights_close_to_full_precision() -> None:
    # Execute: the same seed, data and steps in full precision and under bfloat16 autocast
    full, full_accuracy = _trained(FULL_PRECISION)
    mixed, mixed_accuracy = _trained(precision_for("bfloat16", CPU))
    # Assert: it learns; what a member would send stays float32; autocast changed the
    # arithmetic (weights differ) without changing what was learnt
    assert mixed_accuracy >= 0.9 and full_accuracy >= 0.9
    assert all(
        p.dtype == torch.float32 for p in mixed.state_dict().values() if p.is_floating_point()
    )
    differences = [
        float((a - b).detach().abs().max())
        for a, b in zip(full.parameters(), mixed.parameters(), strict=True)
    ]
    assert 0 < max(differences) < 0.2
