"""Each ``train.augment`` choice applies only the transforms it names."""

from __future__ import annotations

import pytest
import torch

from fractofl.core.images.augmentation import (
    BRIGHTNESS_RANGE,
    CONTRAST_RANGE,
    NOISE_MAX_STD,
    TRANSFORMS,
    Augmentation,
    AugmentationError,
    parse_augmentation,
)
from fractofl.core.images.preprocessing import Preprocessing

PIXEL_STD = 0.25
DRAWS = 64


def _image() -> torch.Tensor:
    """A (1, 16, 16) image with no symmetry, so every flip and turn tells apart."""
    return torch.arange(256, dtype=torch.float32).reshape(1, 16, 16) / 64.0 - 2.0


def _dihedral(image: torch.Tensor, flips_only: bool = False) -> list[torch.Tensor]:
    turns = [0] if flips_only else [0, 1, 2, 3]
    variants = []
    for k in turns:
        turned = torch.rot90(image, k, dims=(1, 2))
        variants += [turned, torch.flip(turned, dims=(2,))]
        variants += [torch.flip(turned, dims=(1,)), torch.flip(turned, dims=(1, 2))]
    return variants


def _draws(names: tuple[str, ...], image: torch.Tensor) -> list[torch.Tensor]:
    torch.manual_seed(0)
    augmentation = Augmentation(names, pixel_std=PIXEL_STD)
    return [augmentation(image) for _ in range(DRAWS)]


def _index_in(candidates: list[torch.Tensor], out: torch.Tensor) -> int | None:
    return next((i for i, c in enumerate(candidates) if torch.equal(c, out)), None)


@pytest.mark.parametrize(
    ("choice", "names"),
    [
        ("fracture", ("rot90", "flips")),
        ("none", ()),
        ("true", ("rot90", "flips")),
        ("False", ()),
        ("noise+flips", ("flips", "noise")),
        (" rotate + intensity ", ("rotate", "intensity")),
    ],
)
def test_choices_name_their_transforms_in_running_order(choice: str, names: tuple) -> None:
    # Execute / Assert
    assert parse_augmentation(choice) == names


@pytest.mark.parametrize("choice", ["mirror", "flips+blur", "+", ""])
def test_an_unknown_choice_names_the_valid_ones(choice: str) -> None:
    # Execute / Assert
    with pytest.raises(AugmentationError, match=r"choose a preset \(fracture, none\)"):
        parse_augmentation(choice)


def test_flips_only_mirror_and_reach_all_four_mirror_images() -> None:
    # Prepare
    image = _image()
    mirrors = _dihedral(image, flips_only=True)
    # Execute
    outs = _draws(("flips",), image)
    # Assert: every draw is one of the 4 mirror images (no turn), and all 4 occur
    seen = {_index_in(mirrors, out) for out in outs}
    assert None not in seen and seen == {0, 1, 2, 3}


def test_quarter_turns_and_flips_stay_in_the_dihedral_group() -> None:
    # Prepare
    image = _image()
    group = _dihedral(image)
    turns_only = [torch.rot90(image, k, dims=(1, 2)) for k in range(4)]
    # Execute
    rotated = _draws(("rot90",), image)
    both = _draws(("rot90", "flips"), image)
    # Assert: rot90 gives only turns, all four; with flips all 8 symmetries occur
    assert {_index_in(turns_only, out) for out in rotated} == {0, 1, 2, 3}
    assert None not in {_index_in(group, out) for out in both}
    assert len({tuple(out.flatten().tolist()) for out in both}) == 8


def test_small_rotations_keep_the_values_range_and_are_not_quarter_turns() -> None:
    # Prepare
    image = _image()
    group = _dihedral(image)
    # Execute
    outs = _draws(("rotate",), image)
    # Assert: resampled (no symmetry of the square), values within the input's range
    # (bilinear with reflected edges never extrapolates), and close to the original
    assert all(_index_in(group, out) is None for out in outs)
    assert all(out.min() >= image.min() - 1e-5 and out.max() <= image.max() + 1e-5 for out in outs)
    assert max(float((out - image).abs().mean()) for out in outs) < float(image.std())


def test_intensity_is_an_affine_map_of_the_pixels_within_its_ranges() -> None:
    # Prepare
    image = _image()
    centred = image - image.mean()
    # Execute
    outs = _draws(("intensity",), image)
    # Assert: out = (x - mean) * contrast + mean + brightness / std, the geometry unchanged
    for out in outs:
        contrast = float((out - out.mean()).flatten() @ centred.flatten() / centred.pow(2).sum())
        brightness = float(out.mean() - image.mean()) * PIXEL_STD
        assert torch.allclose(out, centred * contrast + out.mean(), atol=1e-5)
        assert abs(contrast - 1) <= CONTRAST_RANGE + 1e-6
        assert abs(brightness) <= BRIGHTNESS_RANGE + 1e-6
    assert len({round(float(o.mean()), 6) for o in outs}) > DRAWS // 2


def test_noise_adds_zero_mean_noise_of_bounded_size_and_nothing_else() -> None:
    # Prepare
    image = torch.zeros(1, 64, 64)
    # Execute
    outs = _draws(("noise",), image)
    # Assert: per draw, the residual's std (in pixel units) is within the stated bound
    stds = [float(out.std()) * PIXEL_STD for out in outs]
    assert max(stds) <= NOISE_MAX_STD * 1.1 and max(stds) > NOISE_MAX_STD / 4
    assert abs(float(torch.stack(outs).mean())) < 0.01


def test_none_returns_the_image_unchanged() -> None:
    # Execute / Assert
    assert all(torch.equal(out, _image()) for out in _draws((), _image()))


def test_the_choice_is_recorded_with_the_models_preprocessing() -> None:
    # Prepare
    preprocessing = Preprocessing(32, augmentation=parse_augmentation("rotate+noise"))
    # Execute
    restored = Preprocessing.from_dict(preprocessing.to_dict())
    legacy = Preprocessing.from_dict({"image_size": 32, "mean": 0.5, "std": 0.25})
    # Assert
    assert restored == preprocessing and restored.augmentation == ("rotate", "noise")
    assert legacy.augmentation == ()


def test_every_transform_is_documented_in_the_config_comment() -> None:
    # Prepare
    from pathlib import Path

    conf = (Path(__file__).resolve().parents[3] / "conf" / "train" / "default.yaml").read_text()
    # Execute / Assert
    assert all(name in conf for name in TRANSFORMS)
