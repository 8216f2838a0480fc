"""Difficulty knobs of the synthetic SEM fracture-surface generator."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class SynthStyle:
    """How hard and how SEM-like the synthetic images are.

    The defaults of ``mix_fraction``, ``mix_strength_max``, ``noise`` and ``blur_max`` are
    calibrated so that centralized training of the default small CNN reaches roughly
    80-95 % test accuracy instead of saturating (measured in bench/RESULTS.md).

    All fields are scalars with defaults, so a style can be built from a flat config section
    (``SynthStyle(**cfg)``). Ranges are checked on construction.

    Attributes
    ----------
    image_size : int
        Side of the square output image in pixels.
    field_of_view : float
        Width of the imaged field in texture pixels at zoom 1. Texture feature sizes (striation
        spacing, dimple and grain diameters) are defined in texture pixels, so this sets the
        apparent feature size independently of ``image_size``, which only sets the resolution.
    zoom_min, zoom_max : float
        Range of the random magnification (log-uniform); 2 shows features twice as large.
    mix_fraction : float
        Fraction of images whose texture is blended with another class's texture.
    mix_strength_max : float
        Largest weight of the foreign texture in a blend; below 0.5 so the labelled class
        stays dominant.
    mix_region_prob : float
        Probability that a blend is confined to a random soft-edged region instead of global.
    noise : float
        Shot-noise strength multiplier; 0 disables the noise.
    electron_dose : float
        Detected electrons per pixel at full white when ``noise`` is 1; shot noise has a
        standard deviation of ``noise * sqrt(intensity / electron_dose)``.
    noise_jitter : float
        Per-image relative variation of the noise strength (uniform in 1 +/- this).
    scanline_jitter : float
        Standard deviation of the per-scan-line brightness offset (SEM line noise).
    blur_max : float
        Largest Gaussian blur sigma in output pixels (focus / probe size), drawn uniformly.
    charging_prob : float
        Probability that an image shows charging streaks along the scan lines.
    charging_streaks_max : int
        Largest number of charging streaks in a charged image.
    charging_strength : float
        Largest brightness added by a charging streak.
    edge_brightening : float
        Fraction of the local gradient magnitude added to the image (SEM edge effect).
    contrast_jitter : float
        Contrast is multiplied by a factor uniform in 1 +/- this.
    brightness_jitter : float
        Brightness is shifted by an offset uniform in +/- this.
    vignette_prob : float
        Probability of darkened image corners.
    vignette_strength : float
        Largest relative darkening at the corners when vignetting is applied.
    """

    image_size: int = 128
    field_of_view: float = 128.0
    zoom_min: float = 0.75
    zoom_max: float = 1.5
    mix_fraction: float = 0.45
    mix_strength_max: float = 0.45
    mix_region_prob: float = 0.5
    noise: float = 1.6
    electron_dose: float = 200.0
    noise_jitter: float = 0.5
    scanline_jitter: float = 0.01
    blur_max: float = 1.1
    charging_prob: float = 0.1
    charging_streaks_max: int = 4
    charging_strength: float = 0.35
    edge_brightening: float = 0.6
    contrast_jitter: float = 0.2
    brightness_jitter: float = 0.08
    vignette_prob: float = 0.3
    vignette_strength: float = 0.25

    def __post_init__(self) -> None:
        """Check every field against its valid range.

        Raises
        ------
        ValueError
            Naming the field, its value and the valid range.
        """
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(
                    f"SynthStyle.{f.name} must be a number, got {value!r} ({type(value).__name__})"
                )
            if not math.isfinite(value):
                raise ValueError(f"SynthStyle.{f.name} must be finite, got {value!r}")
        _check(self, "image_size", 8, 4096, integer=True)
        _check(self, "field_of_view", 8.0, 4096.0)
        _check(self, "zoom_min", 0.05, 10.0)
        _check(self, "zoom_max", self.zoom_min, 10.0)
        _check(self, "mix_fraction", 0.0, 1.0)
        _check(self, "mix_strength_max", 0.0, 0.5, high_open=True)
        _check(self, "mix_region_prob", 0.0, 1.0)
        _check(self, "noise", 0.0, 10.0)
        _check(self, "electron_dose", 1.0, 1e6)
        _check(self, "noise_jitter", 0.0, 1.0)
        _check(self, "scanline_jitter", 0.0, 0.5)
        _check(self, "blur_max", 0.0, 10.0)
        _check(self, "charging_prob", 0.0, 1.0)
        _check(self, "charging_streaks_max", 1, 64, integer=True)
        _check(self, "charging_strength", 0.0, 1.0)
        _check(self, "edge_brightening", 0.0, 5.0)
        _check(self, "contrast_jitter", 0.0, 1.0, high_open=True)
        _check(self, "brightness_jitter", 0.0, 0.5)
        _check(self, "vignette_prob", 0.0, 1.0)
        _check(self, "vignette_strength", 0.0, 1.0)


def _check(
    style: SynthStyle,
    name: str,
    low: float,
    high: float,
    *,
    integer: bool = False,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    value = getattr(style, name)
    if integer and not isinstance(value, int):
        raise ValueError(f"SynthStyle.{name} must be an integer, got {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        bracket_low = "(" if low_open else "["
        bracket_high = ")" if high_open else "]"
        raise ValueError(
            f"SynthStyle.{name}={value!r} is out of range; valid range is "
            f"{bracket_low}{low}, {high}{bracket_high}"
        )
