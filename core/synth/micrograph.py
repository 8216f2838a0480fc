"""Synthetic large SEM micrographs with physical feature sizes, as microscopes write them.

A micrograph is a 16-bit (or 8-bit) grayscale TIFF, 2048 x 1536 by default, whose fracture
features have their physical size at the image's pixel size: the pixel size follows from the
magnification as microscopes define it (horizontal field width = 127 mm / magnification,
divided by the width in pixels), and each class's texture is rendered once at a fixed size,
then resampled so that its feature size in micrometres lands in the class's physical range.
The same random state at twice the magnification shows the same surface, zoomed in twice
about the image centre. A field wider than the rendered texture is mirror-tiled.

The bottom rows carry a data bar (a flat strip with text-like blocks and a scale bar of a
round length), and the metadata is written as Thermo Fisher/FEI (tag 34682, INI text),
Zeiss (tag 34118, CZ_SEM text) or JEOL (a ``.txt`` sidecar) would write it, so that
:func:`fractofl.core.images.sem_scale.read_sem_scale` reads the scale back.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from fractofl.core.config.taxonomy import validate_classes
from fractofl.core.files.whole_folder import check_can_write, folder_written_whole
from fractofl.core.images.databar import MAX_SHARE_OF_HEIGHT, MIN_ROWS
from fractofl.core.synth.dataset import ForeignFolderError
from fractofl.core.synth.sample import texture_for
from fractofl.core.synth.textures import _CLE_CELL, _DUC_CELL, _FAT_WAVELENGTH, _IG_CELL

# A magnification is the ratio of this display width to the horizontal field width (FEI's
# "MagCanvasRealWidth", the 5-inch Polaroid print width that SEM magnifications refer to).
REFERENCE_DISPLAY_WIDTH_MM = 127.0
VENDORS = ("fei", "zeiss", "jeol")
FEI_TAG, ZEISS_TAG = 34682, 34118  # FEI_HELIOS, CZ_SEM
MANIFEST = ".micrographs.json"  # hidden: the data check and loaders skip it
SIDE_RANGE = (64, 16384)  # image width and height, px
TEXTURE_RANGE = (64, 2048)  # rendered texture side, px
MAGNIFICATION_RANGE = (10.0, 1e6)

# Physical size of each class's main feature, um (low, high): fatigue striation spacing
# (about da/dN per cycle, from slow mid-range growth to fast growth), ductile dimple spacing
# (structural steels and aluminium alloys; patches of finer dimples go down to 0.3x this),
# cleavage facet size (about the ferrite grain or bainite packet size) and intergranular
# grain size (prior-austenite grains of quenched and tempered steels).
FEATURE_SIZE_UM: dict[str, tuple[float, float]] = {
    "fatigue": (0.2, 2.0),
    "ductile": (1.0, 10.0),
    "cleavage": (10.0, 60.0),
    "intergranular": (10.0, 80.0),
}
# The same feature's size range in texture pixels, as the texture functions draw it.
TEXTURE_FEATURE_PX: dict[str, tuple[float, float]] = {
    "fatigue": _FAT_WAVELENGTH,
    "ductile": _DUC_CELL,
    "cleavage": _CLE_CELL,
    "intergranular": _IG_CELL,
}

# ---- imaging: the operator's brightness and contrast, then detector noise ---------------
_NORMALISE_PERCENTILES = (1.0, 99.0)  # of the clean surface, mapped to the span below
_MIN_SURFACE_SPREAD = 0.02  # a flatter surface is not stretched further
_SPAN = (0.65, 0.9)  # share of the full scale the operator's contrast gives the surface
_CENTRE = (0.4, 0.6)  # mean grey the operator's brightness sets, share of the full scale
_DOSE = (300.0, 3000.0)  # detected electrons per pixel at full white (log-uniform)
_SCANLINE_NOISE = 0.003  # std of the per-scan-line brightness offset
_STATS_STRIDE = 4  # percentiles are taken on every 4th row and column

# ---- the data bar, as shares of its height or of the image width ------------------------
_BAR_BACKGROUND = {"fei": 0.0, "zeiss": 0.12, "jeol": 0.0}  # share of the full scale
_TEXT_ROWS = (0.15, 0.45)  # tops of the two text lines
_TEXT_HEIGHT = 0.22
_TEXT_WIDTH = 0.35  # the text block's share of the width (keeps every bar row flat)
_GLYPH_GRID = (5, 3)  # rows, columns of a glyph's bitmap
_GLYPH_FILL = 0.55
_SPACE_PROB = 0.15
_SCALE_BAR_ROW = 0.78
_SCALE_BAR_THICKNESS = 0.08
_SCALE_BAR_MAX_WIDTH = 0.2
_MARGIN = 0.02

_HV_CHOICES_V = (5000, 10000, 15000, 20000)
_WD_MM = (5.0, 15.0)
_ACQUIRED = "01/15/2026"

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class MicrographSpec:
    """The shape of synthetic micrographs; the magnification and vendor of each image are
    drawn from ``magnifications`` and ``vendors``.

    Attributes
    ----------
    width, height : int
        Pixels, data bar included.
    magnifications : tuple of float
        Magnifications (referred to a 127 mm display width) the images cycle through.
    vendors : tuple of str
        Metadata formats the images cycle through: ``fei``, ``zeiss``, ``jeol``.
    databar_fraction : float
        Data-bar height as a share of ``height``; 0 for no bar.
    bit_depth : int
        8 or 16 bits per pixel.
    texture_px : int
        Side of the texture rendered per image; fields larger than it are mirror-tiled.
    """

    width: int = 2048
    height: int = 1536
    magnifications: tuple[float, ...] = (500.0, 1000.0, 2000.0, 5000.0)
    vendors: tuple[str, ...] = ("fei", "zeiss")
    databar_fraction: float = 0.07
    bit_depth: int = 16
    texture_px: int = 768

    def __post_init__(self) -> None:
        """Raise ValueError naming the field, its value and what is valid."""
        for name, (low, high) in (
            ("width", SIDE_RANGE),
            ("height", SIDE_RANGE),
            ("texture_px", TEXTURE_RANGE),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(
                    f"MicrographSpec.{name}={value!r} must be an integer in [{low}, {high}]"
                )
        if not self.magnifications or not all(map(_is_magnification, self.magnifications)):
            raise ValueError(
                f"MicrographSpec.magnifications={self.magnifications!r} must be a non-empty "
                f"tuple of numbers in {list(MAGNIFICATION_RANGE)}, e.g. (500.0, 1000.0)"
            )
        unknown = [v for v in self.vendors if v not in VENDORS]
        if not self.vendors or unknown:
            raise ValueError(
                f"MicrographSpec.vendors={self.vendors!r} must name one or more of {list(VENDORS)}"
            )
        if self.bit_depth not in (8, 16):
            raise ValueError(f"MicrographSpec.bit_depth={self.bit_depth!r} must be 8 or 16")
        fraction = self.databar_fraction
        if not (isinstance(fraction, int | float) and 0 <= fraction < MAX_SHARE_OF_HEIGHT):
            raise ValueError(
                f"MicrographSpec.databar_fraction={fraction!r} must be in [0, "
                f"{MAX_SHARE_OF_HEIGHT}) (0: no data bar)"
            )
        if 0 < self.databar_px < MIN_ROWS:
            raise ValueError(
                f"MicrographSpec.databar_fraction={fraction!r} gives a {self.databar_px}-row "
                f"data bar at height {self.height}; a bar needs at least {MIN_ROWS} rows, so "
                f"use 0 (no bar) or at least {MIN_ROWS / self.height:.4f}"
            )

    @property
    def databar_px(self) -> int:
        """Rows of data bar at the bottom of every image."""
        return round(self.databar_fraction * self.height)


def _is_magnification(value: object) -> bool:
    low, high = MAGNIFICATION_RANGE
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high


@dataclass(frozen=True)
class MicrographInfo:
    """What was written: the file and the scale its metadata gives."""

    path: Path
    class_name: str
    vendor: str
    magnification: float
    pixel_size_um: float
    databar_px: int


def pixel_size_um(magnification: float, width: int) -> float:
    """Micrometres per pixel: horizontal field width (127 mm / magnification) / width."""
    return REFERENCE_DISPLAY_WIDTH_MM * 1000.0 / magnification / width


def feature_scale_um(class_name: str, rng: np.random.Generator) -> float:
    """Micrometres per texture pixel for one image of ``class_name``.

    Log-uniform in (low_um / low_px, high_um / high_px), so that every feature size the
    texture draws (low_px..high_px) comes out within the physical range (low_um..high_um).
    """
    if class_name not in FEATURE_SIZE_UM:
        raise KeyError(
            f"no physical feature size for class {class_name!r}; valid classes are "
            f"{list(FEATURE_SIZE_UM)}"
        )
    (low_um, high_um), (low_px, high_px) = (
        FEATURE_SIZE_UM[class_name],
        TEXTURE_FEATURE_PX[class_name],
    )
    return math.exp(rng.uniform(math.log(low_um / low_px), math.log(high_um / high_px)))


def render_surface(
    class_name: str,
    pixel_um: float,
    width: int,
    height: int,
    texture_px: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """The clean fracture surface of a class at a pixel size: float32 (height, width) in [0, 1].

    The texture (``texture_px`` square, randomly rotated by a multiple of 90 degrees and
    flipped) is resampled about its centre so that one texture pixel spans
    :func:`feature_scale_um` micrometres; a field larger than it is mirror-tiled.
    """
    render = texture_for(class_name)
    scale = feature_scale_um(class_name, rng)
    texture = np.rot90(render(texture_px, rng), int(rng.integers(4)))
    if rng.random() < 0.5:
        texture = texture[:, ::-1]
    image = Image.fromarray(np.ascontiguousarray(texture, dtype=np.float32))
    per_px = pixel_um / scale  # texture pixels per image pixel
    span = texture_px / per_px  # image pixels the texture covers
    if width <= span and height <= span:
        half_w, half_h, mid = width * per_px / 2, height * per_px / 2, texture_px / 2
        box = (mid - half_w, mid - half_h, mid + half_w, mid + half_h)
        return _resized(image, width, height, box)
    tile_px = max(1, math.floor(span))
    offset = (texture_px - tile_px * per_px) / 2
    box = (offset, offset, offset + tile_px * per_px, offset + tile_px * per_px)
    tile = _resized(image, tile_px, tile_px, box)
    return _fit(_fit(tile, height, axis=0), width, axis=1)


def _resized(image: Image.Image, width: int, height: int, box: Box) -> np.ndarray:
    resized = image.resize((width, height), Image.Resampling.BICUBIC, box=box)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def _fit(tile: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Crop the centre of ``tile`` along ``axis`` to ``size``, or mirror-tile it out to it."""
    have = tile.shape[axis]
    if have >= size:
        start = (have - size) // 2
        return tile[start : start + size] if axis == 0 else tile[:, start : start + size]
    before = (size - have) // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (before, size - have - before)
    return np.pad(tile, pad, mode="symmetric")


def image_surface(surface: np.ndarray, bit_depth: int, rng: np.random.Generator) -> np.ndarray:
    """Brightness and contrast, shot and scan-line noise, then integers spanning most of
    the ``bit_depth`` range (uint8 or uint16)."""
    sample = surface[::_STATS_STRIDE, ::_STATS_STRIDE]
    low, high = np.percentile(sample, _NORMALISE_PERCENTILES)
    spread = max(float(high - low), _MIN_SURFACE_SPREAD)
    span, centre = rng.uniform(*_SPAN), rng.uniform(*_CENTRE)
    signal = (surface - np.float32((low + high) / 2)) * np.float32(span / spread)
    signal += np.float32(centre)
    dose = math.exp(rng.uniform(*np.log(_DOSE)))
    # Gaussian approximation of the Poisson count: fast, and exact enough at these doses.
    noise = rng.standard_normal(signal.shape, dtype=np.float32)
    signal += np.sqrt(np.clip(signal, 0.0, None) / np.float32(dose)) * noise
    signal += rng.normal(0.0, _SCANLINE_NOISE, (signal.shape[0], 1)).astype(np.float32)
    dtype = np.uint16 if bit_depth == 16 else np.uint8
    full = np.iinfo(dtype).max
    return np.round(np.clip(signal, 0.0, 1.0) * full).astype(dtype)


def scale_bar(pixel_um: float, width: int) -> tuple[float, int]:
    """A round scale-bar length (1, 2 or 5 times a power of ten, um) at most a fifth of the
    width, and its length in pixels."""
    longest = _SCALE_BAR_MAX_WIDTH * width * pixel_um
    power = 10.0 ** math.floor(math.log10(longest))
    length = max(step * power for step in (1.0, 2.0, 5.0) if step * power <= longest)
    return length, max(1, round(length / pixel_um))


def burn_databar(
    pixels: np.ndarray, rows: int, vendor: str, bar_px: int, rng: np.random.Generator
) -> None:
    """Overwrite the bottom ``rows`` of ``pixels`` with a flat data bar: two lines of
    text-like glyph blocks at the left, a scale bar of ``bar_px`` with a label at the right.
    Every row keeps more than half of its pixels at the background value, as
    :func:`fractofl.core.images.databar.detect_databar` expects."""
    if rows == 0:
        return
    full = np.iinfo(pixels.dtype).max
    width = pixels.shape[1]
    bar = pixels[-rows:]
    bar[:] = round(_BAR_BACKGROUND[vendor] * full)
    text_h = max(1, round(_TEXT_HEIGHT * rows))
    glyph_w = max(2, round(0.6 * text_h))
    margin = max(1, round(_MARGIN * width))
    for top in _TEXT_ROWS:
        _text(bar, round(top * rows), margin, round(_TEXT_WIDTH * width), text_h, glyph_w, rng)
    start = max(width - margin - bar_px, round((_TEXT_WIDTH + _MARGIN) * width))
    thickness = max(1, round(_SCALE_BAR_THICKNESS * rows))
    row = min(round(_SCALE_BAR_ROW * rows), rows - thickness)
    bar[row : row + thickness, start : width - margin] = full
    label = start + max(0, (width - margin - start) // 2 - 2 * glyph_w)
    _text(
        bar,
        round(_TEXT_ROWS[1] * rows),
        label,
        min(width - margin, label + 5 * glyph_w),
        text_h,
        glyph_w,
        rng,
    )


def _text(
    bar: np.ndarray,
    top: int,
    left: int,
    right: int,
    height: int,
    glyph_w: int,
    rng: np.random.Generator,
) -> None:
    """Random glyph bitmaps (some left out as spaces) from ``left`` to ``right``."""
    pitch = glyph_w + max(1, glyph_w // 2)
    count = max(0, (right - left) // pitch)
    glyphs = rng.random((count, *_GLYPH_GRID)) < _GLYPH_FILL
    glyphs &= (rng.random(count) >= _SPACE_PROB)[:, None, None]
    rows = np.arange(height) * _GLYPH_GRID[0] // height
    cols = np.arange(glyph_w) * _GLYPH_GRID[1] // glyph_w
    full = np.iinfo(bar.dtype).max
    for i, glyph in enumerate(glyphs):
        x = left + i * pitch
        block = bar[top : top + height, x : x + glyph_w]
        block[glyph[rows][:, cols][: block.shape[0], : block.shape[1]]] = full


def fei_metadata(
    pixel_um: float, width: int, height: int, databar: int, hv: int, wd_mm: float
) -> str:
    """FEI_HELIOS INI text: [Scan] PixelWidth/PixelHeight in metres, [PrivateFei]
    DatabarHeight in pixels."""
    pixel_m = pixel_um * 1e-6
    return (
        f"[User]\nDate={_ACQUIRED}\nUser=fractofl-synth\n[Beam]\nHV={hv}\nBeam=EBeam\n"
        f"[EBeam]\nHV={hv}\nWD={wd_mm / 1000!r}\n"
        f"[Scan]\nPixelWidth={pixel_m!r}\nPixelHeight={pixel_m!r}\n"
        f"HorFieldsize={pixel_m * width!r}\nVerFieldsize={pixel_m * (height - databar)!r}\n"
        f"[Image]\nResolutionX={width}\nResolutionY={height - databar}\n"
        f"MagCanvasRealWidth={REFERENCE_DISPLAY_WIDTH_MM / 1000!r}\n"
        f"[PrivateFei]\nDataBarAvailable={int(databar > 0)}\nDatabarHeight={databar}\n"
    )


def zeiss_metadata(pixel_um: float, magnification: float, hv: int, wd_mm: float) -> str:
    """CZ_SEM text: ``AP_IMAGE_PIXEL_SIZE`` in nm and ``AP_MAG`` as Zeiss writes it."""
    kilo = f"{magnification / 1000:.2f}"
    exact = magnification >= 1000 and float(kilo) * 1000 == magnification
    mag = f"{kilo} K X" if exact else f"{magnification:.10g} X"
    lines = [
        "0",
        "AP_IMAGE_PIXEL_SIZE",
        f"Image Pixel Size = {pixel_um * 1000!r} nm",
        "AP_MAG",
        f"Mag = {mag}",
        "AP_ACTUALKV",
        f"EHT = {hv / 1000:.2f} kV",
        "AP_WD",
        f"WD = {wd_mm:.2f} mm",
        "DP_DETECTOR_CHANNEL",
        "Signal A = SE2",
    ]
    return "\r\n".join(lines) + "\r\n"


def write_jeol_sidecar(
    image: Path, magnification: float, marker_um: float, marker_px: int, hv: int
) -> Path:
    """Write the ``<image>.txt`` JEOL writes beside an image: ``$CM_MAG``,
    ``$$SM_MICRON_BAR`` (scale bar in pixels) and ``$$SM_MICRON_MARKER`` (its length)."""
    marker = f"{marker_um:g}um" if marker_um >= 1 else f"{marker_um * 1000:g}nm"
    sidecar = image.with_suffix(".txt")
    sidecar.write_text(
        f"$CM_FORMAT JEOL/SEM\n$CM_TITLE {image.stem}\n$CM_MAG {magnification:g}\n"
        f"$CM_ACCEL_VOLT {hv / 1000:.2f}\n$$SM_MICRON_BAR {marker_px}\n"
        f"$$SM_MICRON_MARKER {marker}\n"
    )
    return sidecar


def write_micrograph(
    path: Path,
    class_name: str,
    magnification: float,
    vendor: str,
    rng: np.random.Generator,
    spec: MicrographSpec | None = None,
) -> MicrographInfo:
    """Render one micrograph of ``class_name`` and write it as ``vendor``'s microscope would.

    Parameters
    ----------
    path : Path
        The TIFF to write (its folder must exist); JEOL also writes ``path.with_suffix(".txt")``.
    class_name : str
        A class with a texture and a physical feature size (:data:`FEATURE_SIZE_UM`).
    magnification : float
        Referred to a 127 mm display width; sets the pixel size with ``spec.width``.
    vendor : str
        ``fei`` (tag 34682), ``zeiss`` (tag 34118) or ``jeol`` (sidecar).
    rng : np.random.Generator
        Source of randomness; the file is a deterministic function of its state.
    spec : MicrographSpec, optional
        Image shape; the default 2048 x 1536, 16-bit.

    Returns
    -------
    MicrographInfo
        The scale the metadata gives (JEOL's reader gets it from the rounded scale bar).
    """
    spec = spec or MicrographSpec()
    if vendor not in VENDORS:
        raise ValueError(f"vendor {vendor!r} is not one of {list(VENDORS)}")
    if not _is_magnification(magnification):
        raise ValueError(
            f"magnification {magnification!r} must be a number in {list(MAGNIFICATION_RANGE)}"
        )
    pixel_um = pixel_size_um(magnification, spec.width)
    rows = spec.databar_px
    surface = render_surface(
        class_name, pixel_um, spec.width, spec.height - rows, spec.texture_px, rng
    )
    pixels = np.empty((spec.height, spec.width), np.uint16 if spec.bit_depth == 16 else np.uint8)
    pixels[: spec.height - rows] = image_surface(surface, spec.bit_depth, rng)
    marker_um, marker_px = scale_bar(pixel_um, spec.width)
    burn_databar(pixels, rows, vendor, marker_px, rng)
    hv = int(rng.choice(_HV_CHOICES_V))
    wd_mm = round(float(rng.uniform(*_WD_MM)), 2)
    extratags = []
    if vendor == "fei":
        text = fei_metadata(pixel_um, spec.width, spec.height, rows, hv, wd_mm)
        extratags = [(FEI_TAG, "s", 0, text, True)]
    elif vendor == "zeiss":
        text = zeiss_metadata(pixel_um, magnification, hv, wd_mm)
        extratags = [(ZEISS_TAG, "s", 0, text, True)]
    tifffile.imwrite(path, pixels, extratags=extratags, metadata=None, software="fractofl synth")
    if vendor == "jeol":
        write_jeol_sidecar(path, magnification, marker_um, marker_px, hv)
    return MicrographInfo(path, class_name, vendor, float(magnification), pixel_um, rows)


def write_micrograph_set(
    root: Path,
    classes: Sequence[str],
    per_class: int,
    spec: MicrographSpec | None = None,
    seed: int = 0,
) -> list[MicrographInfo]:
    """Write ``root/<class>/<class>-<index>.tif`` for every class, whole or not at all.

    Each class cycles through every (magnification, vendor) pair of ``spec`` in an order
    drawn from ``seed``; each image has its own random stream from (seed, class name,
    index), so a class's images do not depend on the other classes asked for. A
    ``.micrographs.json`` at the root lists what was written.

    Raises
    ------
    ForeignFolderError
        If ``root`` holds files and no ``.micrographs.json`` (someone's own images).
    ValueError
        If ``per_class`` is below 1 or ``seed`` below 0; TaxonomyError or KeyError for bad
        class names.
    """
    spec = spec or MicrographSpec()
    names = validate_classes(classes)
    unknown = [name for name in names if name not in FEATURE_SIZE_UM]
    if unknown:
        raise KeyError(
            f"no synthetic micrograph for class(es) {unknown}; valid classes are "
            f"{list(FEATURE_SIZE_UM)} (nothing was written)"
        )
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class={per_class!r} must be a whole number of images >= 1")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a whole number >= 0")
    _check_replaceable(root)
    bytes_per_image = spec.width * spec.height * spec.bit_depth // 8 + 8192
    check_can_write(root, len(names) * per_class * bytes_per_image)
    pairs = [(m, v) for m in spec.magnifications for v in spec.vendors]
    infos: list[MicrographInfo] = []
    with folder_written_whole(root) as staging:
        for name in names:
            key = zlib.crc32(name.encode())
            order = np.random.default_rng([seed, key]).permutation(len(pairs))
            (staging / name).mkdir()
            for index in range(per_class):
                magnification, vendor = pairs[int(order[index % len(pairs)])]
                rng = np.random.default_rng([seed, key, index])
                target = staging / name / f"{name}-{index:04d}.tif"
                info = write_micrograph(target, name, magnification, vendor, rng, spec)
                infos.append(_moved(info, staging, root))
        manifest = {"spec": asdict(spec), "seed": seed, "images": [_entry(i, root) for i in infos]}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return infos


def _check_replaceable(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise ForeignFolderError(f"{root} is a file; choose a folder for the micrographs")
    if root.is_dir() and any(root.iterdir()) and not (root / MANIFEST).is_file():
        raise ForeignFolderError(
            f"{root} is not empty and has no {MANIFEST}, so it was not written by the "
            "micrograph generator; choose an empty or new folder (nothing was written)"
        )


def _moved(info: MicrographInfo, staging: Path, root: Path) -> MicrographInfo:
    return replace(info, path=root / info.path.relative_to(staging))


def _entry(info: MicrographInfo, root: Path) -> dict[str, object]:
    entry = asdict(info)
    entry["path"] = info.path.relative_to(root).as_posix()
    return entry
