"""The physical scale of an SEM micrograph, from what the microscope wrote beside it.

A member's images come from different microscopes at 100x to 10,000x: the same pixel
count covers very different areas. Each image's pixel size (micrometres per pixel), its
magnification and the height of the data bar burnt into its bottom are read, in order,
from:

1. its own TIFF tags, parsed by ``tifffile``: Thermo Fisher/FEI (``TiffFile.fei_metadata``:
   ``Scan.PixelWidth`` in metres, ``PrivateFei.DatabarHeight`` in pixels) and Zeiss
   (``TiffFile.sem_metadata``: ``ap_image_pixel_size`` with its unit, ``ap_mag``);
2. the sidecar ``.txt`` that JEOL and Hitachi microscopes write beside the image (same
   name): JEOL's ``$$SM_MICRON_BAR`` (scale bar in pixels) and ``$$SM_MICRON_MARKER`` (its
   length, e.g. ``5um``), ``$CM_MAG``; Hitachi's ``PixelSize`` (nm) and ``Magnification``;
3. a ``scale.yaml`` in the image's folder or a folder above it, for images without
   metadata (``pixel_size_um``, optionally ``magnification`` and ``databar_px``).

An image none of these describe has no known scale (``pixel_size_um`` None).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from fractofl.core.images.imageio import IMAGE_SUFFIXES
from fractofl.core.images.scale import SCALE_FILE, SemScale

SIDECAR_SUFFIX = ".txt"
TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
MAX_SIDECAR_BYTES = 1 << 20  # microscopes write a few kilobytes
MAX_SCALE_FILES_CACHED = 1024
UM_PER: dict[str, float] = {"pm": 1e-6, "nm": 1e-3, "um": 1.0, "µm": 1.0, "μm": 1.0, "mm": 1e3}
_LENGTH = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*(pm|nm|um|µm|μm|mm)\s*$")
_ZEISS_MAG = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(K)?\s*X\s*$", re.IGNORECASE)
SQUARE_TOLERANCE = 0.01  # FEI's PixelWidth and PixelHeight may differ by rounding only
SCALE_KEYS = {"pixel_size_um": float, "magnification": float, "databar_px": int}


class ScaleFileError(ValueError):
    """A ``scale.yaml`` that cannot be used; the message names the file and the key."""


UNKNOWN = SemScale(None)


def length_um(text: str) -> float | None:
    """``"5um"``, ``"2.233 nm"``, ``"500 nm"`` in micrometres; None if it is not a length."""
    match = _LENGTH.match(text)
    return float(match.group(1)) * UM_PER[match.group(2)] if match else None


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _from_fei(fei: dict[str, Any]) -> SemScale | None:
    scan = fei.get("Scan", {})
    width_m = _positive(scan.get("PixelWidth"))
    if width_m is None:
        return None
    height_m = _positive(scan.get("PixelHeight"))
    if height_m is not None and abs(height_m - width_m) > SQUARE_TOLERANCE * width_m:
        # Non-square pixels are a scan setting no fractograph uses: more likely a
        # corrupt header. Say so rather than guess which one is right.
        return SemScale(
            None,
            None,
            None,
            f"FEI tags contradict themselves: PixelWidth {width_m:g} m, PixelHeight {height_m:g} m",
        )
    databar = _positive(fei.get("PrivateFei", {}).get("DatabarHeight"))
    return SemScale(width_m * 1e6, None, int(databar) if databar else None, "FEI tags")


def _zeiss_magnification(value: Any) -> float | None:
    if isinstance(value, int | float):
        return _positive(value)
    match = _ZEISS_MAG.match(str(value))
    if not match:
        return None
    return float(match.group(1)) * (1000.0 if match.group(2) else 1.0)


def _from_zeiss(sem: dict[str, Any]) -> SemScale | None:
    entry = sem.get("ap_image_pixel_size")
    if not isinstance(entry, tuple) or len(entry) < 2:
        return None
    value, unit = entry[1], entry[2] if len(entry) > 2 else ""
    size = length_um(f"{value} {unit}") if unit else length_um(str(value))
    if size is None or size <= 0:
        return None
    mag = sem.get("ap_mag")
    magnification = None
    if isinstance(mag, tuple) and len(mag) > 1:
        magnification = _zeiss_magnification(mag[1])
    return SemScale(size, magnification, None, "Zeiss tags")


def tiff_tag_scale(source: Path | BinaryIO) -> SemScale | None:
    """The scale in a TIFF's FEI or Zeiss tags (a file, or its bytes as a stream); None
    when it has neither or is no TIFF."""
    import tifffile

    try:
        with tifffile.TiffFile(source) as tif:
            fei, zeiss = tif.fei_metadata, tif.sem_metadata
    except (OSError, ValueError, tifffile.TiffFileError):
        return None  # the image reader reports a broken file; no scale here
    return (_from_fei(fei) if fei else None) or (_from_zeiss(zeiss) if zeiss else None)


def _sidecar_fields(text: str) -> dict[str, str]:
    """``KEY value`` (JEOL) and ``Key=value`` (Hitachi) lines, first occurrence kept."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("$"):
            key, _, value = line.partition(" ")
        elif "=" in line:
            key, _, value = line.partition("=")
        else:
            continue
        fields.setdefault(key.strip(), value.strip())
    return fields


def _from_sidecar(path: Path) -> SemScale | None:
    sidecar = path.with_suffix(SIDECAR_SUFFIX)
    if not sidecar.is_file() or sidecar.stat().st_size > MAX_SIDECAR_BYTES:
        return None
    fields = _sidecar_fields(sidecar.read_text(errors="replace"))
    bar_px = _positive(fields.get("$$SM_MICRON_BAR"))
    marker = length_um(fields.get("$$SM_MICRON_MARKER", ""))
    if bar_px and marker:
        return SemScale(marker / bar_px, _positive(fields.get("$CM_MAG")), None, "JEOL sidecar")
    pixel_nm = _positive(fields.get("PixelSize"))
    if pixel_nm:
        return SemScale(
            pixel_nm * 1e-3, _positive(fields.get("Magnification")), None, "Hitachi sidecar"
        )
    return None


def read_scale_file(path: Path) -> SemScale:
    """A folder's ``scale.yaml``; ScaleFileError naming the file and the key at fault."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ScaleFileError(f"cannot read {path}: {exc}") from None
    if not isinstance(document, dict):
        raise ScaleFileError(f"{path} must be a mapping, e.g. `pixel_size_um: 0.05`")
    unknown = sorted(set(map(str, document)) - set(SCALE_KEYS))
    if unknown:
        raise ScaleFileError(
            f"{path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(SCALE_KEYS)}"
        )
    if "pixel_size_um" not in document:
        raise ScaleFileError(f"{path} needs pixel_size_um (micrometres per pixel)")
    values: dict[str, Any] = {}
    for key, kind in SCALE_KEYS.items():
        if key not in document:
            continue
        value = document[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ScaleFileError(f"{path}: {key}={value!r} must be a number > 0")
        if kind is int and value != int(value):
            raise ScaleFileError(f"{path}: {key}={value!r} must be a whole number of pixels")
        values[key] = kind(value)
    return SemScale(
        values["pixel_size_um"], values.get("magnification"), values.get("databar_px"), str(path)
    )


@functools.lru_cache(maxsize=MAX_SCALE_FILES_CACHED)
def _scale_file_as_of(path: Path, mtime_ns: int) -> SemScale:
    """``read_scale_file``, read once per folder and version of the file, not once per
    image it covers (a failure is not kept: it is raised again for every image)."""
    return read_scale_file(path)


def _from_scale_file(path: Path, root: Path | None) -> SemScale | None:
    folder = path.parent
    while True:
        candidate = folder / SCALE_FILE
        if candidate.is_file():
            return _scale_file_as_of(candidate, candidate.stat().st_mtime_ns)
        if root is None or folder == root or root not in folder.parents:
            return None  # never above the data folder
        folder = folder.parent


def is_scale_companion(path: Path) -> bool:
    """Whether ``path`` is a folder's ``scale.yaml`` or the sidecar ``.txt`` of an image
    beside it (files the data check reads for scale, not images it skips)."""
    if path.name == SCALE_FILE:
        return True
    if path.suffix.lower() != SIDECAR_SUFFIX:
        return False
    return any(path.with_suffix(suffix).is_file() for suffix in IMAGE_SUFFIXES) or any(
        path.with_suffix(suffix.upper()).is_file() for suffix in IMAGE_SUFFIXES
    )


def read_sem_scale(path: Path, root: Path | None = None) -> SemScale:
    """The scale of the image at ``path``: its TIFF tags, else its sidecar, else the
    nearest ``scale.yaml`` in its folder or above (up to ``root``); UNKNOWN if none.
    ScaleFileError for a ``scale.yaml`` that cannot be used."""
    if path.suffix.lower() in TIFF_SUFFIXES:
        found = tiff_tag_scale(path)
        if found is not None:
            return found
    return companion_scale(path, root)


def companion_scale(path: Path, root: Path | None = None) -> SemScale:
    """The scale the files beside an image give (sidecar, else ``scale.yaml``), for an
    image whose own tags give none; UNKNOWN if none does."""
    return _from_sidecar(path) or _from_scale_file(path, root) or UNKNOWN
