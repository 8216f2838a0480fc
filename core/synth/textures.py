"""Procedural fracture-surface textures, one per fracture class, as seen under an SEM.

Every texture function has the signature ``(size, rng) -> image`` and returns a float32
``(size, size)`` array in [0, 1]. Feature sizes are in texture pixels; every call draws its
own shape parameters from ``rng``, so each class is a distribution rather than a template,
and the ranges deliberately overlap between classes (faint striations, small cleavage facets,
large intergranular grains).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

FloatArray = np.ndarray
TextureFn = Callable[[int, np.random.Generator], np.ndarray]

# Gaussian kernels are cut at this many standard deviations.
_BLUR_TRUNCATE = 3.0

# Power-weight spread up to which a 3x3 neighbourhood search is accurate enough.
_CELLS_NEAR_SPREAD = 0.15

# ---- fatigue: striations, plateaus, beach marks ---------------------------------------------
_FAT_WAVELENGTH = (2.6, 6.5)  # striation spacing at the image centre, px
_FAT_GROWTH = (-0.3, 1.0)  # log change of the spacing across one image width
_FAT_FM_DEPTH = (0.0, 0.35)  # relative depth of the periodic spacing modulation
_FAT_FM_PERIOD = (20.0, 80.0)  # period of that modulation, px
_FAT_ORIGIN_DISTANCE = (0.7, 6.0)  # crack origin distance in image widths (front curvature)
_FAT_WOBBLE = (0.5, 3.0)  # irregularity of the fronts, px
_FAT_AMPLITUDE = (0.08, 0.42)  # striation contrast (low values give faint striations)
_FAT_SHARPNESS = (1.0, 3.0)  # exponent narrowing the bright ridges
_FAT_PLATEAU_PROB = 0.5  # chance of a second plateau with tilted striations
_FAT_PLATEAU_TILT = (0.15, 0.5)  # radians between the two plateaus' fronts
_FAT_BEACH_PROB = 0.4
_FAT_BEACH_PERIOD = (22.0, 70.0)  # px
_FAT_BEACH_AMPLITUDE = (0.04, 0.12)
_FAT_CRACK_PROB = 0.35  # chance of a secondary crack along one striation

# ---- ductile: dimples ----------------------------------------------------------------------
_DUC_CELL = (8.0, 19.0)  # mean dimple spacing, px
_DUC_SIZE_SPREAD = 0.45  # power-weight spread: mixed dimple sizes
_DUC_WARP = 0.2  # grid warp in dimple spacings: curved rims
_DUC_ELONGATED_PROB = 0.35
_DUC_ELONGATION = (1.3, 2.3)
_DUC_BIMODAL_PROB = 0.5  # chance of patches of much finer dimples
_DUC_FINE_RATIO = (0.3, 0.5)
_DUC_FINE_MIN = 4.5  # px; finer dimples would dissolve into noise
_DUC_RIM_WIDTH = (0.6, 1.6)  # px
_DUC_RIM_BRIGHTNESS = (0.25, 0.5)
_DUC_INCLUSION_PROB = 0.25  # fraction of dimples with a bright particle at the bottom

# ---- cleavage: facets with river lines -----------------------------------------------------
_CLE_CELL = (34.0, 100.0)  # facet spacing, px (the low end overlaps large grains)
_CLE_TILT = 0.0025  # std of the facet tilt shading, grey per px
_CLE_FLOW_SPREAD = 0.6  # std of river direction around the global crack direction, rad
_CLE_CONVERGENCE = (0.5, 1.6)  # log narrowing of the river spacing across one facet
_CLE_RIVER_SPACING = (3.0, 8.0)  # finest river spacing, px
_CLE_RIVER_LEVELS = 3  # tributary orders; each order doubles the spacing
_CLE_RIVER_AMPLITUDE = (0.05, 0.35)
_CLE_RIVERLESS_PROB = 0.15  # facets without visible river lines
_CLE_STEP_BRIGHTNESS = (0.25, 0.5)
_CLE_STEP_WIDTH = (0.8, 1.8)  # px

# ---- intergranular: rock-candy grains ------------------------------------------------------
_IG_CELL = (13.0, 42.0)  # grain spacing, px (the high end overlaps small cleavage facets)
_IG_TILT = 0.3  # std of the shading change across one grain
_IG_SPLIT_PROB = 0.5  # grains showing two faces of the polyhedron
_IG_EDGE_BRIGHTNESS = (0.2, 0.45)
_IG_EDGE_WIDTH = (0.7, 1.6)  # px
_IG_CRACK_PROB = 0.15  # grains with an open (dark) boundary crack


# ---- shared helpers ------------------------------------------------------------------------


def gaussian_blur(image: FloatArray, sigma: float) -> FloatArray:
    """Blur a float image with a separable Gaussian kernel (reflecting borders).

    Parameters
    ----------
    image : np.ndarray
        2-D float image.
    sigma : float
        Standard deviation in pixels; 0 or less returns a float32 copy.

    Returns
    -------
    np.ndarray
        Float32 array of the same shape.
    """
    out = np.asarray(image, dtype=np.float32)
    if sigma <= 0:
        return out.copy()
    radius = max(1, math.ceil(_BLUR_TRUNCATE * sigma))
    offsets = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    for axis in (0, 1):
        n = out.shape[axis]
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="symmetric")
        acc = np.zeros_like(out)
        for i, weight in enumerate(kernel):
            acc += weight * (padded[i : i + n] if axis == 0 else padded[:, i : i + n])
        out = acc
    return out


def smooth_noise(height: int, width: int, scale: float, rng: np.random.Generator) -> FloatArray:
    """Smooth random field with zero mean and unit standard deviation.

    Bicubic upsampling of a coarse white-noise grid: much cheaper than blurring full-size
    noise with a wide kernel.

    Parameters
    ----------
    height, width : int
        Output shape.
    scale : float
        Correlation length in pixels (spacing of the coarse grid).
    rng : np.random.Generator
        Source of randomness.

    Returns
    -------
    np.ndarray
        Float32 array of shape (height, width).
    """
    scale = max(scale, 1.0)
    grid_h = math.ceil(height / scale) + 3
    grid_w = math.ceil(width / scale) + 3
    coarse = rng.standard_normal((grid_h, grid_w)).astype(np.float32)
    box = (1.0, 1.0, 1.0 + width / scale, 1.0 + height / scale)
    field = np.asarray(
        Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC, box=box),
        dtype=np.float32,
    )
    field = field - field.mean()
    return field / (field.std() + 1e-6)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _grid(height: int, width: int) -> tuple[FloatArray, FloatArray]:
    """Pixel-centre coordinates (y, x) as float32 arrays."""
    y = np.arange(height, dtype=np.float32)[:, None] + np.float32(0.5)
    x = np.arange(width, dtype=np.float32)[None, :] + np.float32(0.5)
    return np.broadcast_to(y, (height, width)), np.broadcast_to(x, (height, width))


@dataclass(frozen=True)
class _Cells:
    """A power-diagram (weighted Voronoi) tessellation rasterised on the pixel grid."""

    index: np.ndarray  # int (h, w): id of the nearest seed
    neighbour: np.ndarray  # int (h, w): id of the second-nearest seed (across the boundary)
    edge: np.ndarray  # float (h, w): distance to the nearest cell boundary, px
    dy: np.ndarray  # float (h, w): pixel minus nearest-seed position, px
    dx: np.ndarray
    count: int  # number of seeds; per-seed attributes are arrays of this length


def _cells(
    height: int,
    width: int,
    cell: float,
    rng: np.random.Generator,
    size_spread: float = 0.0,
    warp: float = 0.0,
) -> _Cells:
    """Rasterise a power diagram of one jittered seed per grid cell.

    Each pixel only compares the seeds of nearby grid cells (3x3, or 5x5 when weights or the
    warp can pull the winner further away), which keeps the cost independent of the number
    of seeds. The image is laid out as (grid_row, row_in_cell, grid_col, col_in_cell)
    blocks so that each neighbour offset is one broadcast instead of a gather.

    Parameters
    ----------
    height, width : int
        Raster shape.
    cell : float
        Grid spacing in pixels, i.e. the typical cell diameter.
    rng : np.random.Generator
        Source of randomness.
    size_spread : float
        Standard deviation of the power weights in units of ``cell**2``; larger values give
        more mixed cell sizes.
    warp : float
        Amplitude of a smooth displacement of the pixel grid in units of ``cell``; non-zero
        values bend the otherwise straight cell boundaries.
    """
    g = max(2, round(cell))
    reach = 2 if size_spread > _CELLS_NEAR_SPREAD or warp > 0 else 1
    gh, gw = math.ceil(height / g), math.ceil(width / g)
    ny, nx = gh + 2 * reach, gw + 2 * reach
    seed_y = ((np.arange(ny)[:, None] - reach + rng.random((ny, nx))) * g).astype(np.float32)
    seed_x = ((np.arange(nx)[None, :] - reach + rng.random((ny, nx))) * g).astype(np.float32)
    weight = np.clip(rng.standard_normal((ny, nx)), -2.0, 2.0).astype(np.float32)
    weight *= np.float32(size_spread * g * g)
    ids = np.arange(ny * nx, dtype=np.int32).reshape(ny, nx)

    py = (np.arange(gh)[:, None, None, None] * g + np.arange(g)[None, :, None, None]).astype(
        np.float32
    ) + np.float32(0.5)
    px = (np.arange(gw)[None, None, :, None] * g + np.arange(g)[None, None, None, :]).astype(
        np.float32
    ) + np.float32(0.5)
    shape = (gh, g, gw, g)
    if warp > 0:
        amplitude = np.float32(warp * g)
        py = py + amplitude * smooth_noise(gh * g, gw * g, 1.5 * g, rng).reshape(shape)
        px = px + amplitude * smooth_noise(gh * g, gw * g, 1.5 * g, rng).reshape(shape)
    best1 = np.full(shape, np.inf, dtype=np.float32)
    best2 = np.full(shape, np.inf, dtype=np.float32)
    id1 = np.zeros(shape, dtype=np.int32)
    id2 = np.zeros(shape, dtype=np.int32)
    for di in range(2 * reach + 1):
        for dj in range(2 * reach + 1):
            window = (slice(di, di + gh), slice(dj, dj + gw))
            sy = seed_y[window][:, None, :, None]
            sx = seed_x[window][:, None, :, None]
            # Without warp the two squared terms broadcast from g-times smaller arrays.
            power = (py - sy) ** 2 + ((px - sx) ** 2 - weight[window][:, None, :, None])
            sid = ids[window][:, None, :, None]
            closer = power < best1
            second = power < best2
            # In-place masked updates; the order makes "closer" win over "second".
            np.copyto(best2, power, where=second)
            np.copyto(id2, sid, where=second)
            np.copyto(best2, best1, where=closer)
            np.copyto(id2, id1, where=closer)
            np.copyto(best1, power, where=closer)
            np.copyto(id1, sid, where=closer)

    def flat(a: np.ndarray) -> np.ndarray:
        return a.reshape(gh * g, gw * g)[:height, :width]

    index, second_index = flat(id1), flat(id2)
    sy_flat, sx_flat = seed_y.ravel(), seed_x.ravel()
    y, x = flat(np.broadcast_to(py, shape)), flat(np.broadcast_to(px, shape))
    # Distance to the bisector (power line) between the two nearest seeds.
    sep = np.hypot(sy_flat[second_index] - sy_flat[index], sx_flat[second_index] - sx_flat[index])
    edge = (flat(best2) - flat(best1)) / (2.0 * np.maximum(sep, 1e-3))
    return _Cells(
        index=index,
        neighbour=second_index,
        edge=edge.astype(np.float32),
        dy=(y - sy_flat[index]).astype(np.float32),
        dx=(x - sx_flat[index]).astype(np.float32),
        count=ny * nx,
    )


def _stretch(image: FloatArray, size: int) -> FloatArray:
    """Resize a (size, w) image to (size, size), stretching features along x."""
    if image.shape == (size, size):
        return image
    resized = Image.fromarray(image.astype(np.float32)).resize(
        (size, size), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.float32)


def _finish(image: FloatArray) -> FloatArray:
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _check_size(size: int) -> None:
    if size < 4:
        raise ValueError(f"texture size must be at least 4 pixels, got {size}")


# ---- fatigue -------------------------------------------------------------------------------


def _striations(
    y: FloatArray, x: FloatArray, size: int, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """Phase of curved, frequency-modulated striations and the crack-front coordinate.

    The fronts are arcs around a crack origin to the left of the image; the spacing grows
    along the crack and is modulated periodically, and a smooth wobble bends the fronts.
    """
    angle = rng.normal(0.0, 0.35)
    distance = _uniform(rng, _FAT_ORIGIN_DISTANCE) * size
    cy = size / 2 + distance * math.sin(angle + math.pi)
    cx = size / 2 + distance * math.cos(angle + math.pi)
    wobble = smooth_noise(size, size, size / 4, rng) * _uniform(rng, _FAT_WOBBLE)
    u = np.hypot(y - cy, x - cx) - distance + wobble  # 0 near the image centre

    # Phase = 2*pi * integral of 1/wavelength along u, tabulated on a fine 1-D grid.
    step = 0.25
    lo, hi = float(u.min()) - 1.0, float(u.max()) + 1.0
    table_u = np.arange(lo, hi + step, step, dtype=np.float64)
    growth = _uniform(rng, _FAT_GROWTH)
    depth = _uniform(rng, _FAT_FM_DEPTH)
    period = _uniform(rng, _FAT_FM_PERIOD)
    wavelength = (
        _uniform(rng, _FAT_WAVELENGTH)
        * np.exp(growth * table_u / size)
        * (1.0 + depth * np.sin(2 * np.pi * table_u / period + rng.uniform(0, 2 * np.pi)))
    )
    table_phase = 2 * np.pi * np.cumsum(step / wavelength)
    phase = np.interp(u, table_u, table_phase).astype(np.float32)
    return phase + np.float32(rng.uniform(0, 2 * np.pi)), u.astype(np.float32)


def _striation_profile(phase: FloatArray, rng: np.random.Generator) -> FloatArray:
    """Bright narrow ridges with a sawtooth ramp, zero-mean-ish, roughly in [-0.5, 0.5]."""
    ridge = (0.5 + 0.5 * np.cos(phase)) ** _uniform(rng, _FAT_SHARPNESS)
    ramp = (phase / (2 * np.pi)) % 1.0
    saw = _uniform(rng, (0.0, 0.6))
    return (1.0 - saw) * ridge + saw * ramp - 0.5


def fatigue(size: int, rng: np.random.Generator) -> FloatArray:
    """Fatigue: fine, roughly parallel, slightly curved striations.

    The striation spacing varies across the image, the contrast fades in and out, and at
    random there is a second plateau with tilted striations separated by a tear ridge, broad
    beach marks and a secondary crack along one striation.

    Parameters
    ----------
    size : int
        Side of the square texture in pixels.
    rng : np.random.Generator
        Source of randomness.

    Returns
    -------
    np.ndarray
        Float32 (size, size) image in [0, 1].
    """
    _check_size(size)
    y, x = _grid(size, size)
    phase, u = _striations(y, x, size, rng)
    profile = _striation_profile(phase, rng)

    if rng.random() < _FAT_PLATEAU_PROB:
        tilt = _uniform(rng, _FAT_PLATEAU_TILT) * rng.choice([-1.0, 1.0])
        c, s = math.cos(tilt), math.sin(tilt)
        yr = (y - size / 2) * c - (x - size / 2) * s + size / 2
        xr = (y - size / 2) * s + (x - size / 2) * c + size / 2
        phase2, _ = _striations(yr.astype(np.float32), xr.astype(np.float32), size, rng)
        boundary = (
            y
            - size * rng.uniform(0.25, 0.75)
            + smooth_noise(size, size, size / 3, rng) * size * 0.08
            + (x - size / 2) * rng.normal(0.0, 0.3)
        )
        profile = np.where(boundary > 0, _striation_profile(phase2, rng), profile)
        ridge = np.exp(-((boundary / rng.uniform(0.8, 2.0)) ** 2))
    else:
        ridge = np.zeros_like(y)

    amplitude = _uniform(rng, _FAT_AMPLITUDE) * np.clip(
        0.65 + 0.45 * smooth_noise(size, size, size / 3, rng), 0.15, 1.0
    )
    relief = 0.06 * smooth_noise(size, size, size / 5, rng) + 0.04 * smooth_noise(
        size, size, size / 1.5, rng
    )
    image = rng.uniform(0.35, 0.55) + relief + amplitude * profile + 0.3 * ridge

    if rng.random() < _FAT_BEACH_PROB:
        beach_phase = 2 * np.pi * u / _uniform(rng, _FAT_BEACH_PERIOD) + rng.uniform(0, 2 * np.pi)
        image += _uniform(rng, _FAT_BEACH_AMPLITUDE) * np.tanh(2.0 * np.sin(beach_phase))

    if rng.random() < _FAT_CRACK_PROB:
        turns = round(float(np.median(phase)) / (2 * np.pi))  # a striation near mid-image
        centre = 2 * np.pi * (turns + rng.random())
        along = smooth_noise(size, size, size / 2, rng) > rng.uniform(-0.3, 0.6)
        crack = np.exp(-(((phase - centre) / 0.5) ** 2)) * along
        image -= rng.uniform(0.2, 0.4) * crack
    return _finish(image)


# ---- ductile -------------------------------------------------------------------------------


def _dimples(height: int, width: int, cell: float, rng: np.random.Generator) -> FloatArray:
    """Cup-shaped dimples: bright rims, dark bottoms, one wall lit toward the detector.

    The pixel grid is warped before the tessellation so the rims are curved, not polygonal.
    """
    cells = _cells(height, width, cell, rng, size_spread=_DUC_SIZE_SPREAD, warp=_DUC_WARP)
    centre_distance = np.hypot(cells.dy, cells.dx)
    radius = centre_distance + cells.edge
    t = centre_distance / np.maximum(radius, 1e-3)  # 0 at the bottom, 1 at the rim
    light = rng.uniform(0, 2 * np.pi)
    facing = (cells.dx * math.cos(light) + cells.dy * math.sin(light)) / np.maximum(radius, 1e-3)
    rim = np.exp(-cells.edge / _uniform(rng, _DUC_RIM_WIDTH))
    depth = rng.uniform(0.5, 1.1, cells.count).astype(np.float32)[cells.index]
    image = (
        0.28
        + 0.22 * t**2
        - 0.14 * depth * np.exp(-((t / 0.4) ** 2))
        + 0.2 * depth * facing
        + _uniform(rng, _DUC_RIM_BRIGHTNESS) * rim
    )
    has_particle = rng.random(cells.count) < _DUC_INCLUSION_PROB
    particle_radius = rng.uniform(0.7, 2.2, cells.count).astype(np.float32)
    particle = np.exp(-((centre_distance / particle_radius[cells.index]) ** 2))
    return image + 0.45 * particle * has_particle[cells.index]


def ductile(size: int, rng: np.random.Generator) -> FloatArray:
    """Ductile overload: cup-like dimples of mixed size with bright rims and dark centres.

    Dimples are cells of a power diagram with random weights (mixed sizes); at random they
    are elongated (shear dimples), patches of much finer dimples appear, and some dimples
    hold a bright inclusion particle.

    Parameters
    ----------
    size : int
        Side of the square texture in pixels.
    rng : np.random.Generator
        Source of randomness.

    Returns
    -------
    np.ndarray
        Float32 (size, size) image in [0, 1].
    """
    _check_size(size)
    elongation = _uniform(rng, _DUC_ELONGATION) if rng.random() < _DUC_ELONGATED_PROB else 1.0
    width = max(4, math.ceil(size / elongation))
    cell = _uniform(rng, _DUC_CELL)
    image = _dimples(size, width, cell, rng)
    if rng.random() < _DUC_BIMODAL_PROB:
        fine = _dimples(size, width, max(_DUC_FINE_MIN, cell * _uniform(rng, _DUC_FINE_RATIO)), rng)
        patches = smooth_noise(size, width, cell * 3, rng) > rng.uniform(-0.2, 0.8)
        image = np.where(patches, fine, image)
    image = image + 0.05 * smooth_noise(size, width, size / 3, rng)
    return _finish(_stretch(image, size))


# ---- cleavage ------------------------------------------------------------------------------


def _river_lines(
    along: FloatArray,
    across: FloatArray,
    cell: float,
    facet: np.ndarray,
    count: int,
    rng: np.random.Generator,
) -> FloatArray:
    """Branching river lines that converge toward +along within each facet.

    Lines are iso-lines of ``across * exp(k * along)``, so their spacing shrinks downstream.
    Each tributary order doubles the spacing; the lines of finer orders stop at a random
    point downstream, which reads as tributaries merging into the coarser streams.
    """
    convergence = rng.uniform(*_CLE_CONVERGENCE, count).astype(np.float32)[facet] / cell
    spacing = rng.uniform(*_CLE_RIVER_SPACING, count).astype(np.float32)[facet]
    squeeze = np.exp(np.clip(convergence * along, -4.0, 4.0))
    stream = across * squeeze
    table = 64  # per-line random stop positions, indexed by line number modulo this
    width = np.float32(rng.uniform(0.6, 1.1))
    lines = np.zeros_like(along)
    for order in range(_CLE_RIVER_LEVELS):
        period = spacing * 2.0**order
        t = stream / period
        n = np.round(t)
        gap = (t - n) * period / squeeze  # signed pixel distance to the line
        shadow = gap - 1.6 * width  # the dark side of the small cleavage step
        profile = np.exp(-((gap / width) ** 2)) - 0.5 * np.exp(-((shadow / width) ** 2))
        if order < _CLE_RIVER_LEVELS - 1:
            stops = rng.uniform(-0.6, 0.2 + 0.3 * order, table).astype(np.float32) * cell
            keep = (n % 2 == 1) & (along < stops[n.astype(np.int64) % table])
            profile = profile * keep
        lines = np.maximum(lines, profile)
    return lines


def cleavage(size: int, rng: np.random.Generator) -> FloatArray:
    """Cleavage: a few large flat facets with river lines and bright facet steps.

    Each facet has a nearly uniform grey with a slight tilt shading; river lines branch and
    converge in one direction within the facet (roughly the same direction across facets),
    and facet boundaries show as bright steps.

    Parameters
    ----------
    size : int
        Side of the square texture in pixels.
    rng : np.random.Generator
        Source of randomness.

    Returns
    -------
    np.ndarray
        Float32 (size, size) image in [0, 1].
    """
    _check_size(size)
    cell = _uniform(rng, _CLE_CELL)
    cells = _cells(size, size, cell, rng, size_spread=0.3)
    n, idx = cells.count, cells.index
    base = rng.uniform(0.3, 0.62, n).astype(np.float32)[idx]
    tilt_y = rng.normal(0.0, _CLE_TILT, n).astype(np.float32)[idx]
    tilt_x = rng.normal(0.0, _CLE_TILT, n).astype(np.float32)[idx]
    flow = rng.uniform(0, 2 * np.pi) + rng.normal(0.0, _CLE_FLOW_SPREAD, n)
    cos_f = np.cos(flow).astype(np.float32)[idx]
    sin_f = np.sin(flow).astype(np.float32)[idx]
    wiggle = smooth_noise(size, size, rng.uniform(8, 20), rng) * np.float32(rng.uniform(0.5, 2.5))
    along = cells.dx * cos_f + cells.dy * sin_f
    across = -cells.dx * sin_f + cells.dy * cos_f + wiggle
    amplitude = rng.uniform(*_CLE_RIVER_AMPLITUDE, n) * (rng.random(n) > _CLE_RIVERLESS_PROB)
    rivers = _river_lines(along, across, cell, idx, n, rng) * amplitude.astype(np.float32)[idx]

    step = np.exp(-cells.edge / _uniform(rng, _CLE_STEP_WIDTH))
    image = (
        base
        + tilt_y * cells.dy
        + tilt_x * cells.dx
        + rivers
        + _uniform(rng, _CLE_STEP_BRIGHTNESS) * step
        + 0.025 * smooth_noise(size, size, 6.0, rng)
        + 0.04 * smooth_noise(size, size, size / 2, rng)
    )
    return _finish(image)


# ---- intergranular -------------------------------------------------------------------------


def intergranular(size: int, rng: np.random.Generator) -> FloatArray:
    """Intergranular: polyhedral grain facets with 3-D tilt shading and bright edges.

    Grains are power-diagram cells, smaller and more numerous than cleavage facets. Each
    grain is shaded as a tilted plane (random gradient), some show two faces of the
    polyhedron with a ridge between them, grain edges are bright ("rock candy"), and a few
    boundaries are open cracks.

    Parameters
    ----------
    size : int
        Side of the square texture in pixels.
    rng : np.random.Generator
        Source of randomness.

    Returns
    -------
    np.ndarray
        Float32 (size, size) image in [0, 1].
    """
    _check_size(size)
    cell = _uniform(rng, _IG_CELL)
    cells = _cells(size, size, cell, rng, size_spread=0.25)
    n, idx = cells.count, cells.index

    def face() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        base = rng.uniform(0.3, 0.62, n).astype(np.float32)
        gy = rng.normal(0.0, _IG_TILT / cell, n).astype(np.float32)
        gx = rng.normal(0.0, _IG_TILT / cell, n).astype(np.float32)
        return base[idx], gy[idx], gx[idx]

    base, gy, gx = face()
    shade = base + gy * cells.dy + gx * cells.dx
    normal = rng.uniform(0, 2 * np.pi, n)
    offset = rng.normal(0.0, 0.2 * cell, n).astype(np.float32)[idx]
    side = (
        cells.dy * np.sin(normal).astype(np.float32)[idx]
        + cells.dx * np.cos(normal).astype(np.float32)[idx]
        - offset
    )
    split = (rng.random(n) < _IG_SPLIT_PROB)[idx]
    base2, gy2, gx2 = face()
    shade = np.where(split & (side > 0), base2 + gy2 * cells.dy + gx2 * cells.dx, shade)
    ridge = split * np.exp(-((side / 0.8) ** 2))

    edge = np.exp(-cells.edge / _uniform(rng, _IG_EDGE_WIDTH))
    cracked_grain = rng.random(n) < _IG_CRACK_PROB
    cracked = cracked_grain[idx] | cracked_grain[cells.neighbour]
    edge_brightness = _uniform(rng, _IG_EDGE_BRIGHTNESS)
    image = (
        shade
        + np.where(cracked, -0.35, edge_brightness) * edge
        + 0.5 * edge_brightness * ridge
        + 0.02 * smooth_noise(size, size, 3.0, rng)
        + 0.04 * smooth_noise(size, size, size / 2, rng)
    )
    return _finish(image)


TEXTURES: dict[str, TextureFn] = {
    "fatigue": fatigue,
    "ductile": ductile,
    "cleavage": cleavage,
    "intergranular": intergranular,
}
"""Texture function per fracture class name."""
