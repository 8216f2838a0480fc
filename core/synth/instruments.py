"""Each simulated member's own microscope: a feature shift on top of the class skew.

Real members image with different SEMs, detectors and settings, so the same fracture
surface looks brighter or darker, flatter or harsher, noisier or softer from one member to
the next. ``instrument_shift`` (0: every member images alike, the images unchanged to the
bit) scales how far apart the members' instruments are; each member's profile is drawn
once from the set's seed. The coordinator's test set is imaged by no member's instrument.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

_PROFILE_STREAM = 7  # the seed stream members' profiles are drawn from
# At instrument_shift 1: the largest brightness offset (of full scale), contrast and
# detector-gamma factors (log-uniform around 1), added Gaussian noise (of full scale) and
# extra blur (output pixels: a coarser probe or a lower-resolution scan).
MAX_BRIGHTNESS = 0.15
MAX_LOG_CONTRAST = math.log(1.6)
MAX_LOG_GAMMA = math.log(1.8)
MAX_NOISE = 0.06
MAX_BLUR_PX = 1.5


@dataclass(frozen=True)
class InstrumentProfile:
    """How one member's microscope renders a surface."""

    brightness: float = 0.0
    """Offset added to every pixel, as a fraction of full scale."""
    contrast: float = 1.0
    """Gain around mid-grey."""
    gamma: float = 1.0
    """Detector response: above 1 darkens the mid-tones (a flatter, backscatter-like look),
    below 1 lifts them (edge-bright secondary electrons)."""
    noise: float = 0.0
    """Standard deviation of added Gaussian noise, as a fraction of full scale."""
    blur_px: float = 0.0
    """Gaussian blur radius in pixels (resolution)."""

    @property
    def is_identity(self) -> bool:
        """Whether the profile leaves an image unchanged."""
        return self == InstrumentProfile()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as the manifest records it."""
        return {key: round(value, 6) for key, value in asdict(self).items()}

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``image`` (uint8, H x W) as this instrument shows it; itself when identity."""
        if self.is_identity:
            return image
        if self.blur_px > 0:
            blurred = Image.fromarray(image).filter(ImageFilter.GaussianBlur(self.blur_px))
            image = np.asarray(blurred)
        values = image.astype(np.float64) / 255.0
        values = np.clip(values, 0.0, 1.0) ** self.gamma
        values = (values - 0.5) * self.contrast + 0.5 + self.brightness
        if self.noise > 0:
            values = values + rng.normal(0.0, self.noise, size=values.shape)
        return np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


def member_profiles(members: int, shift: float, seed: int) -> list[InstrumentProfile]:
    """Each member's instrument for ``instrument_shift`` ``shift`` (0 to 1; 0: identity
    for all), drawn from ``seed`` alone so the same set has the same instruments."""
    if not 0.0 <= shift <= 1.0:
        raise ValueError(f"instrument_shift={shift} must be between 0 (none) and 1 (strong)")
    if shift == 0:
        return [InstrumentProfile() for _ in range(members)]
    profiles = []
    for member in range(members):
        rng = np.random.default_rng([seed, _PROFILE_STREAM, member])
        spread = rng.uniform(-1.0, 1.0, size=3)
        profiles.append(
            InstrumentProfile(
                brightness=float(spread[0] * MAX_BRIGHTNESS * shift),
                contrast=float(math.exp(spread[1] * MAX_LOG_CONTRAST * shift)),
                gamma=float(math.exp(spread[2] * MAX_LOG_GAMMA * shift)),
                noise=float(rng.uniform(0.0, MAX_NOISE * shift)),
                blur_px=float(rng.uniform(0.0, MAX_BLUR_PX * shift)),
            )
        )
    return profiles
