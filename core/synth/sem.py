"""SEM imaging artefacts applied to a rendered fracture-surface texture."""

from __future__ import annotations

import math

import numpy as np

from fractofl.core.synth.style import SynthStyle
from fractofl.core.synth.textures import gaussian_blur

# The gradient for the edge effect is taken on a lightly smoothed image so that pixel-level
# texture noise does not light up.
_EDGE_PRESMOOTH = 0.7
# Charging streak thickness in rows (log-uniform): thin scan-line streaks up to broad bands.
_STREAK_ROWS = (0.6, 10.0)
# Decay length of a streak along the scan line, in image widths.
_STREAK_LENGTH = (0.15, 1.5)


def apply_sem_effects(image: np.ndarray, style: SynthStyle, rng: np.random.Generator) -> np.ndarray:
    """Make a clean texture look like an SEM secondary-electron micrograph.

    In order: edge brightening, probe blur, charging streaks, vignetting, brightness and
    contrast, signal-dependent shot noise and scan-line noise. The scan direction is along
    the image rows, so this must run after any rotation of the texture.

    Parameters
    ----------
    image : np.ndarray
        2-D float image with values in [0, 1].
    style : SynthStyle
        Strength of each effect.
    rng : np.random.Generator
        Source of randomness; the result is deterministic for a given generator state.

    Returns
    -------
    np.ndarray
        Float32 image of the same shape with values in [0, 1].
    """
    out = np.asarray(image, dtype=np.float32)
    if out.ndim != 2:
        raise ValueError(f"apply_sem_effects expects a 2-D image, got shape {out.shape}")
    out = _edge_brightening(out, style.edge_brightening * rng.uniform(0.5, 1.0))
    out = gaussian_blur(out, rng.uniform(0.0, style.blur_max))
    if rng.random() < style.charging_prob:
        out = _charging(out, style, rng)
    if rng.random() < style.vignette_prob:
        out = _vignette(out, rng.uniform(0.0, style.vignette_strength), rng)
    out = _brightness_contrast(out, style, rng)
    out = _shot_noise(out, style, rng)
    if style.scanline_jitter > 0:
        rows = rng.normal(0.0, style.scanline_jitter, (out.shape[0], 1))
        out = out + rows.astype(np.float32)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _edge_brightening(image: np.ndarray, strength: float) -> np.ndarray:
    """SE edge effect: more electrons escape at steep slopes and edges."""
    if strength <= 0:
        return image
    grad_y, grad_x = np.gradient(gaussian_blur(image, _EDGE_PRESMOOTH))
    return image + np.float32(strength) * np.hypot(grad_y, grad_x)


def _charging(image: np.ndarray, style: SynthStyle, rng: np.random.Generator) -> np.ndarray:
    """Bright streaks that start at a charging spot and decay along the scan line."""
    height, width = image.shape
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    out = image.copy()
    for _ in range(int(rng.integers(1, style.charging_streaks_max + 1))):
        row = rng.uniform(0, height)
        start = rng.uniform(-0.3 * width, width)
        thickness = math.exp(rng.uniform(*np.log(_STREAK_ROWS)))
        length = rng.uniform(*_STREAK_LENGTH) * width
        amplitude = style.charging_strength * rng.uniform(0.3, 1.0)
        across = np.exp(-0.5 * ((rows - row) / thickness) ** 2)
        along = np.where(cols >= start, np.exp(-(cols - start) / length), 0.0)
        out += np.float32(amplitude) * (across * along).astype(np.float32)
    return out


def _vignette(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Darken toward the corners around a slightly off-centre optical axis."""
    height, width = image.shape
    cy = height * rng.uniform(0.35, 0.65)
    cx = width * rng.uniform(0.35, 0.65)
    y = (np.arange(height, dtype=np.float32)[:, None] - cy) / (height / 2)
    x = (np.arange(width, dtype=np.float32)[None, :] - cx) / (width / 2)
    falloff = np.clip((y**2 + x**2) / 2.0, 0.0, 1.0)
    return image * (1.0 - np.float32(strength) * falloff)


def _brightness_contrast(
    image: np.ndarray, style: SynthStyle, rng: np.random.Generator
) -> np.ndarray:
    contrast = 1.0 + rng.uniform(-style.contrast_jitter, style.contrast_jitter)
    brightness = rng.uniform(-style.brightness_jitter, style.brightness_jitter)
    mean = float(image.mean())
    return (image - np.float32(mean)) * np.float32(contrast) + np.float32(mean + brightness)


def _shot_noise(image: np.ndarray, style: SynthStyle, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise of the detected electron count: darker pixels are relatively noisier."""
    strength = style.noise * rng.uniform(1.0 - style.noise_jitter, 1.0 + style.noise_jitter)
    if strength <= 0:
        return image
    dose = style.electron_dose / strength**2
    counts = rng.poisson(np.clip(image, 0.0, None).astype(np.float64) * dose)
    return (counts / dose).astype(np.float32)
