"""Training-time augmentation, chosen by name (``train.augment``).

Each transform takes one normalised image tensor (C, H, W) and returns another, drawing
from torch's global generator (seeded per run and member, so training stays
reproducible). A choice is a preset or transform names joined by ``+``:

- ``fracture`` (the default): ``rot90+flips``. Fracture textures have no preferred
  orientation, so any quarter turn and mirror image is another valid example;
- ``none``: the images as they are (for data whose orientation or intensity matters);
- ``flips``: mirror left-right and top-bottom, each with probability 1/2;
- ``rot90``: a quarter turn by 0, 90, 180 or 270 degrees, equally likely;
- ``rotate``: a small rotation, uniform in +-``ROTATE_MAX_DEGREES``, edges reflected;
- ``intensity``: brightness and contrast as two microscopes or detectors differ:
  contrast about the image mean by a factor in 1 +- ``CONTRAST_RANGE``, then a
  brightness shift of up to +-``BRIGHTNESS_RANGE`` of the pixel range;
- ``noise``: Gaussian noise with a standard deviation uniform in (0,
  ``NOISE_MAX_STD``] of the pixel range, as detector and shot noise.

Transforms always run in this order (geometry first), whatever order a choice names them
in. ``true`` and ``false``, the old boolean values, mean ``fracture`` and ``none``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ROTATE_MAX_DEGREES = 15.0
CONTRAST_RANGE = 0.2
BRIGHTNESS_RANGE = 0.1
NOISE_MAX_STD = 0.03

PRESETS: dict[str, tuple[str, ...]] = {
    "fracture": ("rot90", "flips"),
    "none": (),
    "true": ("rot90", "flips"),
    "false": (),
}


class AugmentationError(ValueError):
    """A ``train.augment`` choice names a transform or preset that does not exist."""


@dataclass(frozen=True)
class Augmentation:
    """A chosen sequence of transforms; ``pixel_std`` is the normalisation's std, so that
    intensity changes are stated in units of the pixel range [0, 1]."""

    names: tuple[str, ...]
    pixel_std: float = 1.0

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """One random augmentation of ``image`` (C, H, W)."""
        for name in self.names:
            image = TRANSFORMS[name](image, self.pixel_std)
        return image


def _rot90(image: torch.Tensor, pixel_std: float) -> torch.Tensor:
    turns = int(torch.randint(0, 4, ()).item())
    return torch.rot90(image, turns, dims=(1, 2)) if turns else image


def _flips(image: torch.Tensor, pixel_std: float) -> torch.Tensor:
    if torch.rand(()) < 0.5:
        image = torch.flip(image, dims=(2,))
    if torch.rand(()) < 0.5:
        image = torch.flip(image, dims=(1,))
    return image


def _rotate(image: torch.Tensor, pixel_std: float) -> torch.Tensor:
    angle = math.radians(float(torch.empty(()).uniform_(-ROTATE_MAX_DEGREES, ROTATE_MAX_DEGREES)))
    cos, sin = math.cos(angle), math.sin(angle)
    theta = torch.tensor([[[cos, -sin, 0.0], [sin, cos, 0.0]]], dtype=image.dtype)
    grid = F.affine_grid(theta, [1, *image.shape], align_corners=False)
    rotated = F.grid_sample(
        image[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    return rotated[0]


def _intensity(image: torch.Tensor, pixel_std: float) -> torch.Tensor:
    contrast = 1.0 + float(torch.empty(()).uniform_(-CONTRAST_RANGE, CONTRAST_RANGE))
    brightness = float(torch.empty(()).uniform_(-BRIGHTNESS_RANGE, BRIGHTNESS_RANGE))
    mean = image.mean()
    return (image - mean) * contrast + mean + brightness / pixel_std


def _noise(image: torch.Tensor, pixel_std: float) -> torch.Tensor:
    std = float(torch.empty(()).uniform_(0.0, NOISE_MAX_STD))
    return image + torch.randn_like(image) * (std / pixel_std)


Transform = Callable[[torch.Tensor, float], torch.Tensor]
TRANSFORMS: dict[str, Transform] = {
    "rot90": _rot90,
    "flips": _flips,
    "rotate": _rotate,
    "intensity": _intensity,
    "noise": _noise,
}


def parse_augmentation(choice: str) -> tuple[str, ...]:
    """The transform names of a ``train.augment`` choice, in the order they run.

    Raises :class:`AugmentationError` naming the valid transforms and presets.
    """
    text = choice.strip().lower()
    if text in PRESETS:
        return PRESETS[text]
    names = [part.strip() for part in text.split("+") if part.strip()]
    unknown = [name for name in names if name not in TRANSFORMS]
    if unknown or not names:
        raise AugmentationError(
            f"train.augment={choice!r}: unknown transform(s) {', '.join(unknown) or '(none)'};"
            f" choose a preset ({', '.join(p for p in PRESETS if p not in ('true', 'false'))})"
            f" or transforms joined by '+' ({'+'.join(TRANSFORMS)})"
        )
    return tuple(name for name in TRANSFORMS if name in names)
