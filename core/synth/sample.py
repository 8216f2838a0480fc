"""Render one labelled synthetic SEM fracture-surface image."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from fractofl.core.synth.sem import apply_sem_effects
from fractofl.core.synth.style import SynthStyle
from fractofl.core.synth.textures import TEXTURES, TextureFn, smooth_noise

# Correlation length of the random blend region, as a fraction of the canvas side.
_REGION_SCALE = 0.5
# Softness of the blend region's edge, in standard deviations of the underlying noise.
_REGION_SOFTNESS = 0.25
# Extra canvas pixels so that bilinear sampling at the crop border never reads outside.
_CANVAS_MARGIN = 2


def texture_for(class_name: str) -> TextureFn:
    """Return the texture function of a class.

    Parameters
    ----------
    class_name : str
        One of the keys of ``TEXTURES``.

    Returns
    -------
    Callable
        The ``(size, rng) -> image`` texture function.

    Raises
    ------
    KeyError
        If there is no texture for ``class_name``; the message lists the valid names.
    """
    try:
        return TEXTURES[class_name]
    except KeyError:
        raise KeyError(
            f"no synthetic texture for class {class_name!r}; valid classes are {list(TEXTURES)}"
        ) from None


def render_sample(
    class_name: str,
    style: SynthStyle,
    rng: np.random.Generator,
    class_names: Sequence[str],
) -> np.ndarray:
    """Render one synthetic SEM image of a fracture class.

    The class texture is rendered at a random magnification, rotated by a random angle
    (cropped so no empty corners show) and randomly flipped. With probability
    ``style.mix_fraction`` another class's texture is blended in, globally or in a random
    region, with weight uniform in (0, ``style.mix_strength_max``]. SEM effects are applied
    last and the result is quantised to 8 bits.

    Parameters
    ----------
    class_name : str
        The label of the image; must have a texture in ``TEXTURES``.
    style : SynthStyle
        Difficulty and realism knobs.
    rng : np.random.Generator
        Source of randomness; the image is a deterministic function of its state.
    class_names : Sequence[str]
        The taxonomy; the blended foreign texture is drawn from its other classes.

    Returns
    -------
    np.ndarray
        uint8 array of shape (style.image_size, style.image_size).

    Raises
    ------
    KeyError
        If ``class_name`` or an entry of ``class_names`` has no texture.
    """
    render = texture_for(class_name)
    others = [name for name in class_names if name != class_name]
    foreign_renders = [texture_for(name) for name in others]

    zoom = math.exp(rng.uniform(math.log(style.zoom_min), math.log(style.zoom_max)))
    angle = rng.uniform(0.0, 360.0)
    crop = style.field_of_view / zoom
    cover = abs(math.cos(math.radians(angle))) + abs(math.sin(math.radians(angle)))
    canvas = math.ceil(crop * cover) + _CANVAS_MARGIN

    texture = render(canvas, rng)
    if foreign_renders and rng.random() < style.mix_fraction:
        foreign = foreign_renders[int(rng.integers(len(foreign_renders)))](canvas, rng)
        weight = style.mix_strength_max * (1.0 - rng.random())  # in (0, max]
        if rng.random() < style.mix_region_prob:
            weight_map = weight * _region_mask(canvas, rng)
            texture = texture + weight_map * (foreign - texture)
        else:
            texture = texture + np.float32(weight) * (foreign - texture)

    view = _rotate_and_crop(texture, angle, crop, style.image_size)
    if rng.random() < 0.5:
        view = view[:, ::-1]
    image = apply_sem_effects(view, style, rng)
    return np.round(image * 255.0).astype(np.uint8)


def _region_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """Soft-edged random blob mask in [0, 1] covering a random part of the canvas."""
    field = smooth_noise(size, size, size * _REGION_SCALE, rng)
    threshold = rng.uniform(-0.8, 0.8)
    return (1.0 / (1.0 + np.exp(-(field - threshold) / _REGION_SOFTNESS))).astype(np.float32)


def _rotate_and_crop(texture: np.ndarray, angle: float, crop: float, size: int) -> np.ndarray:
    """Rotate about the centre, cut the central ``crop`` square and resample to ``size``."""
    image = Image.fromarray(np.ascontiguousarray(texture, dtype=np.float32))
    rotated = image.rotate(angle, resample=Image.Resampling.BILINEAR)
    centre_x, centre_y = rotated.width / 2, rotated.height / 2
    box = (
        centre_x - crop / 2,
        centre_y - crop / 2,
        centre_x + crop / 2,
        centre_y + crop / 2,
    )
    resized = rotated.resize((size, size), Image.Resampling.BICUBIC, box=box)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
