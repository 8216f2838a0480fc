"""Tests of the synthetic SEM textures, SEM effects, sample rendering and SynthStyle."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fractofl.core.config.taxonomy import DEFAULT_CLASSES
from fractofl.core.synth.sample import render_sample
from fractofl.core.synth.sem import apply_sem_effects
from fractofl.core.synth.style import SynthStyle
from fractofl.core.synth.textures import TEXTURES, gaussian_blur, smooth_noise

CLASSES = list(DEFAULT_CLASSES)


def _orientation_coherence(image: np.ndarray, sigma: float = 1.5, block: int = 32) -> float:
    """Mean block-wise coherence of the gradient structure tensor (1 = perfectly parallel)."""
    smooth = gaussian_blur(image.astype(np.float32) / 255.0, sigma)
    grad_y, grad_x = np.gradient(smooth)
    side = (smooth.shape[0] // block) * block

    def pool(values: np.ndarray) -> np.ndarray:
        return values[:side, :side].reshape(side // block, block, side // block, block).mean((1, 3))

    jxx, jyy, jxy = pool(grad_x * grad_x), pool(grad_y * grad_y), pool(grad_x * grad_y)
    coherence = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (jxx + jyy + 1e-12)
    return float(coherence.mean())


# ---- textures ------------------------------------------------------------------------------


def test_textures_cover_the_default_taxonomy() -> None:
    # Prepare / Execute
    keys = set(TEXTURES)

    # Assert
    assert keys == set(DEFAULT_CLASSES)


@pytest.mark.parametrize("class_name", CLASSES)
@pytest.mark.parametrize("size", [17, 128, 203])
def test_texture_shape_dtype_and_range(class_name: str, size: int) -> None:
    # Prepare
    rng = np.random.default_rng(3)

    # Execute
    texture = TEXTURES[class_name](size, rng)

    # Assert
    assert texture.shape == (size, size)
    assert texture.dtype == np.float32
    assert np.isfinite(texture).all()
    assert texture.min() >= 0.0
    assert texture.max() <= 1.0
    assert texture.std() > 0.02, "a texture must not be flat"


@pytest.mark.parametrize("class_name", CLASSES)
def test_texture_is_deterministic_per_seed(class_name: str) -> None:
    # Prepare
    render = TEXTURES[class_name]

    # Execute
    first = render(96, np.random.default_rng(11))
    again = render(96, np.random.default_rng(11))
    other = render(96, np.random.default_rng(12))

    # Assert
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()


def test_texture_rejects_tiny_size() -> None:
    # Prepare
    rng = np.random.default_rng(0)

    # Execute / Assert
    with pytest.raises(ValueError, match="at least 4"):
        TEXTURES["fatigue"](2, rng)


def test_gaussian_blur_keeps_constant_image_and_smooths_noise() -> None:
    # Prepare
    flat = np.full((20, 30), 0.4, dtype=np.float32)
    noisy = np.random.default_rng(0).random((40, 40)).astype(np.float32)

    # Execute
    blurred_flat = gaussian_blur(flat, 2.0)
    blurred_noisy = gaussian_blur(noisy, 2.0)

    # Assert
    np.testing.assert_allclose(blurred_flat, flat, atol=1e-6)
    assert blurred_noisy.shape == noisy.shape
    assert blurred_noisy.std() < 0.5 * noisy.std()


def test_smooth_noise_is_standardised() -> None:
    # Prepare
    rng = np.random.default_rng(5)

    # Execute
    field = smooth_noise(50, 70, 8.0, rng)

    # Assert
    assert field.shape == (50, 70)
    assert abs(float(field.mean())) < 1e-4
    assert float(field.std()) == pytest.approx(1.0, abs=1e-3)


# ---- SEM effects ---------------------------------------------------------------------------


def test_sem_effects_keep_shape_and_range() -> None:
    # Prepare
    image = np.random.default_rng(1).random((64, 48)).astype(np.float32)
    style = SynthStyle(charging_prob=1.0, vignette_prob=1.0, noise=3.0, contrast_jitter=0.9)

    # Execute
    out = apply_sem_effects(image, style, np.random.default_rng(2))

    # Assert
    assert out.shape == image.shape
    assert out.dtype == np.float32
    assert out.min() >= 0.0
    assert out.max() <= 1.0


def test_charging_streaks_are_horizontal_and_bright() -> None:
    # Prepare
    grey = np.full((96, 96), 0.3, dtype=np.float32)
    quiet = {
        "noise": 0.0,
        "scanline_jitter": 0.0,
        "blur_max": 0.0,
        "vignette_prob": 0.0,
        "contrast_jitter": 0.0,
        "brightness_jitter": 0.0,
        "edge_brightening": 0.0,
    }
    charged_style = SynthStyle(charging_prob=1.0, charging_strength=0.5, **quiet)
    clean_style = SynthStyle(charging_prob=0.0, **quiet)

    # Execute
    charged = apply_sem_effects(grey, charged_style, np.random.default_rng(4))
    clean = apply_sem_effects(grey, clean_style, np.random.default_rng(4))

    # Assert
    np.testing.assert_allclose(clean, grey, atol=1e-6)
    assert charged.mean() > clean.mean()
    # Streaks run along scan lines: brightness varies far more between rows than within one.
    row_profile_spread = charged.mean(axis=1).std()
    column_profile_spread = charged.mean(axis=0).std()
    assert row_profile_spread > 0.01
    assert row_profile_spread > column_profile_spread
    assert charged.min() >= 0.3 - 1e-6


def test_shot_noise_grows_with_noise_knob() -> None:
    # Prepare
    grey = np.full((64, 64), 0.5, dtype=np.float32)
    base = {"charging_prob": 0.0, "vignette_prob": 0.0, "scanline_jitter": 0.0}

    # Execute
    low = apply_sem_effects(grey, SynthStyle(noise=0.2, **base), np.random.default_rng(9))
    high = apply_sem_effects(grey, SynthStyle(noise=2.0, **base), np.random.default_rng(9))

    # Assert
    assert high.std() > 3 * low.std()


def test_sem_effects_reject_non_2d_input() -> None:
    # Prepare
    image = np.zeros((4, 4, 3), dtype=np.float32)

    # Execute / Assert
    with pytest.raises(ValueError, match="2-D"):
        apply_sem_effects(image, SynthStyle(), np.random.default_rng(0))


# ---- render_sample -------------------------------------------------------------------------


@pytest.mark.parametrize("class_name", CLASSES)
@pytest.mark.parametrize(
    "style",
    [
        SynthStyle(),
        SynthStyle(image_size=64, zoom_min=0.5, zoom_max=0.5, mix_fraction=1.0),
        SynthStyle(image_size=97, zoom_min=3.0, zoom_max=3.0, charging_prob=1.0),
    ],
    ids=["default", "small-zoomed-out-mixed", "odd-zoomed-in-charged"],
)
def test_render_sample_shape_dtype_and_content(class_name: str, style: SynthStyle) -> None:
    # Prepare
    rng = np.random.default_rng(21)

    # Execute
    image = render_sample(class_name, style, rng, CLASSES)

    # Assert
    assert image.shape == (style.image_size, style.image_size)
    assert image.dtype == np.uint8
    assert image.std() > 5.0, "a rendered sample must show structure"


@pytest.mark.parametrize("class_name", CLASSES)
def test_render_sample_is_deterministic_per_seed(class_name: str) -> None:
    # Prepare
    style = SynthStyle(mix_fraction=0.5, charging_prob=0.5)

    # Execute
    first = render_sample(class_name, style, np.random.default_rng([1, 2]), CLASSES)
    again = render_sample(class_name, style, np.random.default_rng([1, 2]), CLASSES)
    other = render_sample(class_name, style, np.random.default_rng([1, 3]), CLASSES)

    # Assert
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()


def test_render_sample_unknown_class_lists_valid_names() -> None:
    # Prepare
    rng = np.random.default_rng(0)

    # Execute / Assert
    with pytest.raises(KeyError) as excinfo:
        render_sample("corrosion", SynthStyle(), rng, CLASSES)
    message = str(excinfo.value)
    assert "corrosion" in message
    for name in CLASSES:
        assert name in message


def test_render_sample_unknown_name_in_taxonomy_raises() -> None:
    # Prepare
    rng = np.random.default_rng(0)

    # Execute / Assert
    with pytest.raises(KeyError, match="creep"):
        render_sample("fatigue", SynthStyle(), rng, [*CLASSES, "creep"])


def test_render_sample_without_other_classes_skips_mixing() -> None:
    # Prepare
    style = SynthStyle(mix_fraction=1.0)

    # Execute
    image = render_sample("ductile", style, np.random.default_rng(8), ["ductile"])

    # Assert
    assert image.shape == (style.image_size, style.image_size)


def test_mixing_changes_the_image() -> None:
    # Prepare
    pure = SynthStyle(mix_fraction=0.0)
    mixed = SynthStyle(mix_fraction=1.0, mix_strength_max=0.45, mix_region_prob=0.0)

    # Execute
    a = render_sample("cleavage", pure, np.random.default_rng(30), CLASSES)
    b = render_sample("cleavage", mixed, np.random.default_rng(30), CLASSES)

    # Assert
    assert a.tobytes() != b.tobytes()


def test_fatigue_is_more_oriented_than_ductile() -> None:
    # Prepare
    style = SynthStyle()
    seeds = range(30)

    # Execute
    fatigue = [
        _orientation_coherence(render_sample("fatigue", style, np.random.default_rng(s), CLASSES))
        for s in seeds
    ]
    ductile = [
        _orientation_coherence(render_sample("ductile", style, np.random.default_rng(s), CLASSES))
        for s in seeds
    ]

    # Assert
    assert np.mean(fatigue) > np.mean(ductile) + 0.08


# ---- SynthStyle ----------------------------------------------------------------------------


def test_default_style_is_valid_and_frozen() -> None:
    # Prepare
    style = SynthStyle()

    # Execute / Assert
    assert style.image_size == 128
    assert 0.0 < style.mix_strength_max < 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        style.noise = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value", "valid_range"),
    [
        ("image_size", 4, "[8, 4096]"),
        ("image_size", 64.5, "integer"),
        ("mix_fraction", 1.5, "[0.0, 1.0]"),
        ("mix_strength_max", 0.5, "[0.0, 0.5)"),
        ("noise", -0.1, "[0.0, 10.0]"),
        ("zoom_min", 0.0, "[0.05, 10.0]"),
        ("charging_prob", 2.0, "[0.0, 1.0]"),
        ("charging_streaks_max", 0, "[1, 64]"),
        ("contrast_jitter", 1.0, "[0.0, 1.0)"),
        ("blur_max", float("nan"), "finite"),
        ("noise", "loud", "number"),
    ],
)
def test_style_rejects_out_of_range(field: str, value: object, valid_range: str) -> None:
    # Prepare
    kwargs = {field: value}

    # Execute / Assert
    with pytest.raises(ValueError) as excinfo:
        SynthStyle(**kwargs)  # type: ignore[arg-type]
    message = str(excinfo.value)
    assert field in message
    assert repr(value) in message
    assert valid_range in message


def test_style_rejects_zoom_max_below_zoom_min() -> None:
    # Prepare / Execute / Assert
    with pytest.raises(ValueError, match=r"zoom_max=1\.0 .*\[2\.0, 10\.0\]"):
        SynthStyle(zoom_min=2.0, zoom_max=1.0)
