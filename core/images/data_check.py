"""Check a member's ImageFolder-style data directory before it joins a federation.

The layout expected is ``root/<class>/.../<image>``, one folder per configured class.
:func:`check_dataset` walks it, opens every image (decoding it, so truncated files are
caught), hashes the usable ones to find duplicates, and returns a :class:`DataReport`
that :func:`format_report` turns into terminal text and :meth:`DataReport.to_dict` into JSON.

Missing or empty class folders are only warnings: federated data is non-IID and a member
may legitimately hold images of some classes only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fractofl.core.images.databar import databar_rows, detect_databar
from fractofl.core.images.imageio import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageInfo,
    UnreadableImageError,
    file_digest,
    probe_image,
    read_grayscale,
    walk_image_tree,
)
from fractofl.core.images.scale import SCALE_FILE, SemScale, scaled_shape
from fractofl.core.images.sem_scale import (
    UNKNOWN,
    ScaleFileError,
    is_scale_companion,
    read_sem_scale,
)

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(done, total)`` while images are checked."""

_TOP_SIZES = 5


@dataclass(frozen=True)
class UnreadableFile:
    """A file with an image suffix that cannot be used, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class SmallImage:
    """A usable image whose width or height is below the ``min_size`` of the check."""

    path: Path
    width: int
    height: int


@dataclass
class DataReport:
    """Everything :func:`check_dataset` found in one data directory.

    Paths are absolute or relative exactly as ``root`` was given (``root / ...``).

    Attributes
    ----------
    root
        The directory checked.
    classes
        The configured classes, in order.
    class_counts
        Usable images per configured class (0 when the folder is missing or empty).
    missing_classes
        Configured classes with no folder under ``root``.
    unknown_folders
        Sub-folders of ``root`` that are not a configured class, with the number of
        files with an image suffix they hold (not opened).
    loose_files
        Files directly under ``root`` (ignored by ImageFolder-style loaders).
    unreadable
        Files with an image suffix in class folders that cannot be opened or decoded.
    duplicate_groups
        Groups of usable images with identical content (two or more paths each).
    label_conflicts
        The duplicate groups whose copies sit in different classes.
    small_images
        Usable images narrower or lower than ``min_size`` pixels.
    skipped
        Files in class folders without a supported image suffix.
    size_counts
        Number of usable images per (width, height).
    modes
        Number of usable images per PIL mode.
    bit_depths
        Number of usable images per bit depth.
    scale_sources
        Usable images per source of their physical scale (``FEI tags``, ``Zeiss tags``,
        ``JEOL sidecar``, ``Hitachi sidecar``, ``scale.yaml``;
        :mod:`fractofl.core.images.sem_scale`).
    pixel_sizes_um, magnifications
        The pixel sizes (micrometres) and magnifications that were found.
    databars
        Usable images whose metadata gives a data bar height.
    databars_detected
        Usable images without that in whose pixels a data bar was detected
        (:mod:`fractofl.core.images.databar`; only when images are decoded).
    without_scale
        Usable images with no known pixel size.
    model_scale
        A physical-scale model's micrometres per pixel and tile side, when given.
    below_one_tile
        Usable images that, without their data bar and at ``model_scale``, are smaller
        than one tile (a physical-scale model skips them).
    fatal_problems
        Problems that make the directory unusable for training.
    warnings
        Problems worth fixing that do not prevent training.
    """

    root: Path
    classes: tuple[str, ...]
    class_counts: dict[str, int] = field(default_factory=dict)
    missing_classes: list[str] = field(default_factory=list)
    unknown_folders: dict[str, int] = field(default_factory=dict)
    loose_files: list[Path] = field(default_factory=list)
    unreadable: list[UnreadableFile] = field(default_factory=list)
    duplicate_groups: list[list[Path]] = field(default_factory=list)
    label_conflicts: list[list[Path]] = field(default_factory=list)
    small_images: list[SmallImage] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    size_counts: Counter[tuple[int, int]] = field(default_factory=Counter)
    modes: Counter[str] = field(default_factory=Counter)
    bit_depths: Counter[int] = field(default_factory=Counter)
    scale_sources: Counter[str] = field(default_factory=Counter)
    pixel_sizes_um: list[float] = field(default_factory=list)
    magnifications: list[float] = field(default_factory=list)
    databars: int = 0
    databars_detected: int = 0
    without_scale: list[Path] = field(default_factory=list)
    model_scale: tuple[float, int] | None = None
    below_one_tile: list[SmallImage] = field(default_factory=list)
    fatal_problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when there is no fatal problem (warnings are allowed)."""
        return not self.fatal_problems

    @property
    def total_images(self) -> int:
        """Usable images over all configured classes."""
        return sum(self.class_counts.values())

    def size_range(self) -> tuple[int, int, int, int] | None:
        """Return ``(min_width, max_width, min_height, max_height)``, or None if no image."""
        if not self.size_counts:
            return None
        widths = [w for w, _ in self.size_counts]
        heights = [h for _, h in self.size_counts]
        return min(widths), max(widths), min(heights), max(heights)

    def rel(self, path: Path) -> str:
        """Return ``path`` relative to ``root`` as a POSIX string (unchanged if outside)."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable summary; file paths are relative to ``root``."""
        size_range = self.size_range()
        return {
            "root": str(self.root),
            "ok": self.ok,
            "classes": list(self.classes),
            "class_counts": dict(self.class_counts),
            "total_images": self.total_images,
            "missing_classes": list(self.missing_classes),
            "unknown_folders": dict(self.unknown_folders),
            "loose_files": [self.rel(p) for p in self.loose_files],
            "unreadable": [{"path": self.rel(u.path), "reason": u.reason} for u in self.unreadable],
            "duplicate_groups": [[self.rel(p) for p in g] for g in self.duplicate_groups],
            "label_conflicts": [[self.rel(p) for p in g] for g in self.label_conflicts],
            "small_images": [
                {"path": self.rel(s.path), "width": s.width, "height": s.height}
                for s in self.small_images
            ],
            "skipped": [self.rel(p) for p in self.skipped],
            "sizes": {
                "min_width": size_range[0] if size_range else None,
                "max_width": size_range[1] if size_range else None,
                "min_height": size_range[2] if size_range else None,
                "max_height": size_range[3] if size_range else None,
                "most_common": [
                    {"width": w, "height": h, "count": n}
                    for (w, h), n in self.size_counts.most_common()
                ],
            },
            "modes": dict(self.modes),
            "bit_depths": {str(k): v for k, v in sorted(self.bit_depths.items())},
            "scale": {
                "sources": dict(self.scale_sources),
                "min_pixel_size_um": min(self.pixel_sizes_um, default=None),
                "max_pixel_size_um": max(self.pixel_sizes_um, default=None),
                "min_magnification": min(self.magnifications, default=None),
                "max_magnification": max(self.magnifications, default=None),
                "databars": self.databars,
                "databars_detected": self.databars_detected,
                "without_scale": [self.rel(p) for p in self.without_scale],
                "model_pixel_size_um": self.model_scale[0] if self.model_scale else None,
                "tile": self.model_scale[1] if self.model_scale else None,
                "below_one_tile": [
                    {"path": self.rel(s.path), "width": s.width, "height": s.height}
                    for s in self.below_one_tile
                ],
            },
            "fatal_problems": list(self.fatal_problems),
            "warnings": list(self.warnings),
        }


def check_dataset(
    root: Path,
    classes: Sequence[str],
    min_size: int = 32,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: ProgressCallback | None = None,
    *,
    decode: bool = True,
    model_scale: tuple[float, int] | None = None,
) -> DataReport:
    """Check an ImageFolder-style directory and report what a loader would find.

    Hidden entries (names starting with ``.``) are ignored everywhere. Class folders are
    searched recursively; symbolic links to directories below a class folder are not
    followed.

    Parameters
    ----------
    root
        Directory holding one sub-folder per class.
    classes
        Configured class names; folder names must match them exactly.
    min_size
        Images whose width or height is below this many pixels are reported as small.
    max_pixels
        Images declaring more pixels are reported unreadable without being decoded.
    progress
        Optional callback receiving ``(done, total)`` after each image is checked.
    decode
        Decode every image to detect truncation (default). With False only headers are
        read, which is much faster but misses truncated files.
    model_scale
        A physical-scale model's (micrometres per pixel, tile side): images smaller than
        one tile at that scale, without their data bar, are reported.

    Returns
    -------
    DataReport
        The findings; ``report.ok`` is False when the directory cannot be trained on.
    """
    root = Path(root)
    report = DataReport(root=root, classes=tuple(classes), model_scale=model_scale)
    report.class_counts = {name: 0 for name in report.classes}
    if not root.exists():
        report.fatal_problems.append(
            f"data root {root} does not exist; check the data path setting"
        )
        return report
    if not root.is_dir():
        report.fatal_problems.append(
            f"data root {root} is not a directory; point the data path at the folder "
            "that holds one sub-folder per class"
        )
        return report

    try:
        class_dirs = _scan_root(root, report)
    except OSError as exc:
        report.fatal_problems.append(f"cannot list data root {root} ({exc}); check its permissions")
        return report
    images = _collect_class_files(class_dirs, report)
    digests = _check_images(images, report, min_size, max_pixels, decode, progress)
    _find_duplicates(digests, report)
    _summarise(report, class_dirs, min_size)
    return report


def format_report(report: DataReport, max_items: int = 20) -> str:
    """Render a report as plain text for a terminal.

    Parameters
    ----------
    report
        Result of :func:`check_dataset`.
    max_items
        Longest listing printed per section; the rest is summarised as "... and N more".

    Returns
    -------
    str
        Multi-line text: a class table, then only the non-empty sections, then
        ``WARNING:`` and ``FATAL:`` lines.
    """
    lines = [f"Data check of {report.root}", ""]
    width = max([len("class"), *(len(c) for c in report.classes)])
    lines.append(f"  {'class':<{width}}  {'images':>7}")
    for name in report.classes:
        note = "  (no folder)" if name in report.missing_classes else ""
        lines.append(f"  {name:<{width}}  {report.class_counts.get(name, 0):>7}{note}")
    lines.append(f"  {'total':<{width}}  {report.total_images:>7}")

    size_range = report.size_range()
    if size_range is not None:
        common = ", ".join(
            f"{w}x{h} ({n})" for (w, h), n in report.size_counts.most_common(_TOP_SIZES)
        )
        lines += [
            "",
            f"Sizes: width {size_range[0]}..{size_range[1]}, "
            f"height {size_range[2]}..{size_range[3]}; most common: {common}",
            "Modes: " + ", ".join(f"{m} ({n})" for m, n in report.modes.most_common()),
            "Bit depths: "
            + ", ".join(f"{d}-bit ({n})" for d, n in sorted(report.bit_depths.items())),
        ]

    lines += _scale_lines(report)
    rel = report.rel
    conflicts = report.label_conflicts
    _section(
        lines,
        "Unknown folders (not a configured class, ignored)",
        [f"{name}/  ({n} images)" for name, n in report.unknown_folders.items()],
        max_items,
    )
    _section(lines, "Loose files at the root (ignored)", map(rel, report.loose_files), max_items)
    _section(
        lines,
        "Unreadable files",
        [f"{rel(u.path)}: {u.reason}" for u in report.unreadable],
        max_items,
    )
    _section(
        lines,
        "Label conflicts (identical file in different classes)",
        [" = ".join(map(rel, g)) for g in report.label_conflicts],
        max_items,
    )
    _section(
        lines,
        "Duplicate files within a class (identical content)",
        [" = ".join(map(rel, g)) for g in report.duplicate_groups if g not in conflicts],
        max_items,
    )
    _section(
        lines,
        "Small images",
        [f"{rel(s.path)}: {s.width}x{s.height}" for s in report.small_images],
        max_items,
    )
    _section(lines, "Skipped (unsupported suffix)", map(rel, report.skipped), max_items)
    if report.scale_sources:
        _section(lines, "Images without a known scale", map(rel, report.without_scale), max_items)
    if report.model_scale is not None:
        um, tile = report.model_scale
        _section(
            lines,
            f"Smaller than one {tile}x{tile} tile at the model's {um:g} um per pixel (skipped "
            "in training)",
            [f"{rel(s.path)}: {s.width}x{s.height} at that scale" for s in report.below_one_tile],
            max_items,
        )

    if report.warnings or report.fatal_problems:
        lines.append("")
    lines += [f"WARNING: {w}" for w in report.warnings]
    lines += [f"FATAL: {f}" for f in report.fatal_problems]
    return "\n".join(lines) + "\n"


def _scan_root(root: Path, report: DataReport) -> dict[str, Path]:
    """Sort root entries into class folders, unknown folders and loose files."""
    class_dirs: dict[str, Path] = {}
    known = set(report.classes)
    for entry in _visible_entries(root):
        if entry.is_dir():
            if entry.name in known:
                class_dirs[entry.name] = entry
            else:
                report.unknown_folders[entry.name] = sum(
                    1 for p in walk_image_tree(entry) if p.suffix.lower() in IMAGE_SUFFIXES
                )
        else:
            report.loose_files.append(entry)
    report.missing_classes = [c for c in report.classes if c not in class_dirs]
    return class_dirs


def _collect_class_files(class_dirs: dict[str, Path], report: DataReport) -> list[tuple[str, Path]]:
    """List (class, path) for every image-suffixed file; record the others as skipped
    (but not a folder's scale.yaml or an image's sidecar .txt, which are read for scale)."""
    images: list[tuple[str, Path]] = []
    errors: list[OSError] = []
    for name in report.classes:
        if name not in class_dirs:
            continue
        for path in walk_image_tree(class_dirs[name], errors):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                images.append((name, path))
            elif not is_scale_companion(path):
                report.skipped.append(path)
    for err in errors:
        folder = Path(err.filename) if err.filename else report.root
        reason = f"cannot list folder ({err.strerror or err}); its images are not checked"
        report.unreadable.append(UnreadableFile(folder, reason))
    return images


def _check_images(
    images: list[tuple[str, Path]],
    report: DataReport,
    min_size: int,
    max_pixels: int,
    decode: bool,
    progress: ProgressCallback | None,
) -> dict[str, list[tuple[str, Path]]]:
    """Open every image, fill counts and statistics, and group usable ones by digest."""
    by_digest: dict[str, list[tuple[str, Path]]] = {}
    scale_errors: set[str] = set()
    total = len(images)
    if progress is not None:
        progress(0, total)
    for done, (name, path) in enumerate(images, start=1):
        pixels = None
        try:
            info = probe_image(path, max_pixels=max_pixels)
            if decode:
                pixels = read_grayscale(path, max_pixels=max_pixels)
            digest = file_digest(path)
        except UnreadableImageError as exc:
            report.unreadable.append(UnreadableFile(path, exc.reason))
        except OSError as exc:  # file_digest: the file vanished or became unreadable
            report.unreadable.append(UnreadableFile(path, f"cannot read file ({exc})"))
        else:
            _record_usable(report, name, info, min_size)
            _record_scale(report, path, scale_errors, pixels)
            by_digest.setdefault(digest, []).append((name, path))
        if progress is not None:
            progress(done, total)
    return by_digest


def _record_usable(report: DataReport, name: str, info: ImageInfo, min_size: int) -> None:
    report.class_counts[name] += 1
    report.size_counts[(info.width, info.height)] += 1
    report.modes[info.mode] += 1
    report.bit_depths[info.bit_depth] += 1
    if info.width < min_size or info.height < min_size:
        report.small_images.append(SmallImage(info.path, info.width, info.height))


def _record_scale(
    report: DataReport, path: Path, errors: set[str], pixels: np.ndarray | None
) -> None:
    """The image's physical scale, from its metadata, sidecar or folder's scale.yaml, and
    its data bar: the metadata's height, else one detected in the decoded ``pixels``."""
    try:
        scale = read_sem_scale(path, report.root)
    except ScaleFileError as exc:
        if str(exc) not in errors:
            errors.add(str(exc))
            report.warnings.append(f"{exc}; the images it covers count as without scale")
        scale = UNKNOWN
    height = pixels.shape[0] if pixels is not None else None
    if scale.databar_px and height is not None and scale.databar_px >= height:
        report.warnings.append(
            f"{report.rel(path)}: its data bar of {scale.databar_px} px ({scale.source}) "
            f"covers the whole {height}-px image; check its metadata"
        )
    elif not scale.databar_px and pixels is not None and detect_databar(pixels):
        report.databars_detected += 1
    if scale.pixel_size_um is None:
        report.without_scale.append(path)
        return
    source = SCALE_FILE if scale.source.endswith(SCALE_FILE) else scale.source
    report.scale_sources[source] += 1
    report.pixel_sizes_um.append(scale.pixel_size_um)
    if scale.magnification is not None:
        report.magnifications.append(scale.magnification)
    if scale.databar_px:
        report.databars += 1
    if report.model_scale is not None and pixels is not None:
        _record_tile_fit(report, path, scale, pixels)


def _record_tile_fit(report: DataReport, path: Path, scale: SemScale, pixels: np.ndarray) -> None:
    """Whether the image, without its data bar and at the model's scale, holds one tile."""
    assert report.model_scale is not None and scale.pixel_size_um is not None
    to_um, tile = report.model_scale
    rows = max(pixels.shape[0] - databar_rows(pixels, scale), 0)
    height, width = scaled_shape(rows, pixels.shape[1], scale.pixel_size_um, to_um)
    if height < tile or width < tile:
        report.below_one_tile.append(SmallImage(path, width, height))


def _scale_lines(report: DataReport) -> list[str]:
    """The physical scale: where it came from, the pixel sizes and magnifications."""
    if not report.total_images:
        return []
    detected = (
        f"; a data bar detected in the pixels of {report.databars_detected}"
        if report.databars_detected
        else ""
    )
    if not report.scale_sources:
        return [
            f"Physical scale: none of the {report.total_images} images carries a pixel size "
            f"(no SEM metadata, no sidecar .txt, no {SCALE_FILE}){detected}"
        ]
    sources = ", ".join(f"{name} {n}" for name, n in report.scale_sources.most_common())
    line = (
        f"Physical scale: pixel size {min(report.pixel_sizes_um):.4g}.."
        f"{max(report.pixel_sizes_um):.4g} um ({sources})"
    )
    if report.magnifications:
        line += f"; magnification {min(report.magnifications):g}x..{max(report.magnifications):g}x"
    line += f"; data bar known in {report.databars}{detected}"
    return [line]


def _find_duplicates(by_digest: dict[str, list[tuple[str, Path]]], report: DataReport) -> None:
    for members in by_digest.values():
        if len(members) < 2:
            continue
        group = sorted(path for _, path in members)
        report.duplicate_groups.append(group)
        if len({name for name, _ in members}) > 1:
            report.label_conflicts.append(group)
    report.duplicate_groups.sort()
    report.label_conflicts.sort()


def _summarise(report: DataReport, class_dirs: dict[str, Path], min_size: int) -> None:
    """Turn the findings into fatal problems and warnings."""
    if not class_dirs:
        report.fatal_problems.append(
            f"no class folder found in {report.root}; expected sub-folders named "
            f"{list(report.classes)} (the data.classes setting)"
        )
    elif report.total_images == 0:
        report.fatal_problems.append(
            f"no usable image in the class folders of {report.root}; supported suffixes are "
            f"{sorted(IMAGE_SUFFIXES)}"
        )

    for folder, count in report.unknown_folders.items():
        hint = ""
        if folder.lower() in report.classes:
            hint = f"; rename it to {folder.lower()!r} if it holds that class"
        report.warnings.append(
            f"folder {folder!r} ({count} images) is not a configured class and is ignored{hint}"
        )
    if class_dirs:
        for name in report.classes:
            if report.class_counts[name] == 0:
                where = "has no folder" if name in report.missing_classes else "has no usable image"
                report.warnings.append(
                    f"class {name!r} {where} (fine if this member holds no such images)"
                )
    if report.loose_files:
        report.warnings.append(
            f"{len(report.loose_files)} file(s) directly in the root are ignored; "
            "move images into their class folder"
        )
    if report.unreadable:
        report.warnings.append(
            f"{len(report.unreadable)} unreadable file(s) will be skipped; fix or remove them"
        )
    if report.label_conflicts:
        report.warnings.append(
            f"{len(report.label_conflicts)} file(s) appear with identical content under different "
            "classes (labelling conflict); keep each in its correct class only"
        )
    plain_duplicates = len(report.duplicate_groups) - len(report.label_conflicts)
    if plain_duplicates:
        report.warnings.append(
            f"{plain_duplicates} group(s) of duplicate files within a class; "
            "duplicates inflate that class and leak between train and test splits"
        )
    if report.small_images:
        report.warnings.append(
            f"{len(report.small_images)} image(s) smaller than {min_size} px on a side"
        )
    if report.scale_sources and report.without_scale:
        report.warnings.append(
            f"{len(report.without_scale)} image(s) have no known pixel size while others do: "
            f"add a {SCALE_FILE} (pixel_size_um: ...) to their folder"
        )
    if report.skipped:
        report.warnings.append(
            f"{len(report.skipped)} file(s) in class folders skipped for an unsupported suffix "
            f"(supported: {', '.join(sorted(IMAGE_SUFFIXES))})"
        )


def _section(lines: list[str], title: str, items: Iterable[str], limit: int) -> None:
    """Append a titled, indented listing to ``lines`` unless ``items`` is empty."""
    entries = list(items)
    if not entries:
        return
    lines += ["", f"{title}:"]
    lines += [f"  {item}" for item in entries[:limit]]
    if len(entries) > limit:
        lines.append(f"  ... and {len(entries) - limit} more")


def _visible_entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
