"""Synthetic SEM micrographs: the scale their metadata gives reads back, the data bar is found
in the pixels, the features have their physical size, and a set is written deterministically."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

from fractofl.core.images.data_check import check_dataset
from fractofl.core.images.databar import detect_databar
from fractofl.core.images.imageio import probe_image, read_grayscale
from fractofl.core.images.sem_scale import read_sem_scale
from fractofl.core.synth.dataset import ForeignFolderError
from fractofl.core.synth.micrograph import (
    FEATURE_SIZE_UM,
    MANIFEST,
    TEXTURE_FEATURE_PX,
    MicrographSpec,
    feature_scale_um,
    pixel_size_um,
    write_micrograph,
    write_micrograph_set,
)
from fractofl.core.synth.textures import TEXTURES

SMALL = MicrographSpec(width=256, height=192, texture_px=128)
CLASSES = tuple(FEATURE_SIZE_UM)
# A 256-px wide image at 8000x has the pixel size of a 2048-px one at 1000x (62 nm).
STRIATION_SPEC = MicrographSpec(width=256, height=192, texture_px=256)
STRIATION_SEEDS = range(8)
VENDORS3 = ("fei", "zeiss", "jeol")


def _write(tmp_path: Path, class_name: str, mag: float, vendor: str, seed: int = 0) -> Path:
    path = tmp_path / f"{class_name}-{mag:g}-{vendor}-{seed}.tif"
    write_micrograph(path, class_name, mag, vendor, np.random.default_rng(seed), SMALL)
    return path


@pytest.mark.parametrize("class_name", CLASSES)
@pytest.mark.parametrize("vendor", ["fei", "zeiss"])
def test_the_metadata_gives_the_pixel_size_and_the_bar_is_found(
    tmp_path: Path, vendor: str, class_name: str
) -> None:
    # Execute
    path = tmp_path / "a.tif"
    info = write_micrograph(path, class_name, 2000.0, vendor, np.random.default_rng(1), SMALL)
    scale = read_sem_scale(path)
    pixels = tifffile.imread(path)
    # Assert: exact scale back, 16 bits, the bar where the metadata (FEI) says
    assert info.pixel_size_um == pytest.approx(127000.0 / 2000.0 / 256, rel=1e-12)
    assert scale.pixel_size_um == pytest.approx(info.pixel_size_um, rel=1e-12)
    assert pixels.dtype == np.uint16 and pixels.shape == (192, 256)
    assert probe_image(path).bit_depth == 16
    assert abs(detect_databar(read_grayscale(path)) - SMALL.databar_px) <= 2
    if vendor == "fei":
        assert scale.databar_px == SMALL.databar_px == 13 and scale.source == "FEI tags"
    else:
        assert scale.magnification == 2000.0 and scale.databar_px is None
        assert scale.source == "Zeiss tags"


def test_jeol_writes_a_sidecar_whose_scale_bar_gives_the_pixel_size(tmp_path: Path) -> None:
    path = _write(tmp_path, "ductile", 1000.0, "jeol")
    scale = read_sem_scale(path)
    assert path.with_suffix(".txt").is_file() and scale.source == "JEOL sidecar"
    assert scale.magnification == 1000.0
    # JEOL gives the scale as a round length over a whole number of pixels
    assert scale.pixel_size_um == pytest.approx(pixel_size_um(1000.0, 256), rel=0.03)


def test_the_image_spans_most_of_the_16_bit_range(tmp_path: Path) -> None:
    pixels = tifffile.imread(_write(tmp_path, "intergranular", 1000.0, "fei"))
    surface = pixels[: -SMALL.databar_px].astype(np.int64)
    low, high = np.percentile(surface, (0.5, 99.5))
    assert high - low > 0.5 * 65535
    assert len(np.unique(surface)) > 4096  # not 8-bit data shifted up


def test_an_8_bit_spec_and_one_without_a_bar(tmp_path: Path) -> None:
    eight = MicrographSpec(width=128, height=96, texture_px=64, bit_depth=8)
    bare = MicrographSpec(width=128, height=96, texture_px=64, databar_fraction=0.0)
    rng = np.random.default_rng(0)
    write_micrograph(tmp_path / "a.tif", "cleavage", 500.0, "zeiss", rng, eight)
    info = write_micrograph(tmp_path / "b.tif", "cleavage", 500.0, "fei", rng, bare)
    assert tifffile.imread(tmp_path / "a.tif").dtype == np.uint8
    assert info.databar_px == 0 and read_sem_scale(tmp_path / "b.tif").databar_px is None
    assert detect_databar(read_grayscale(tmp_path / "b.tif")) == 0


def test_pixel_size_is_the_127_mm_field_width_over_the_pixels() -> None:
    assert pixel_size_um(1000.0, 2048) == pytest.approx(127.0 / 2048)
    assert pixel_size_um(500.0, 1024) == pytest.approx(4 * pixel_size_um(1000.0, 2048))


def test_every_drawn_feature_size_is_within_its_physical_range() -> None:
    # Prepare: the texture draws its feature size within TEXTURE_FEATURE_PX
    rng = np.random.default_rng(0)
    assert set(FEATURE_SIZE_UM) == set(TEXTURE_FEATURE_PX) == set(TEXTURES)
    for name, (low_um, high_um) in FEATURE_SIZE_UM.items():
        low_px, high_px = TEXTURE_FEATURE_PX[name]
        # Execute
        scales = np.array([feature_scale_um(name, rng) for _ in range(500)])
        # Assert: the extremes of both draws stay in range, and the range is explored
        assert scales.min() * low_px >= low_um * (1 - 1e-9)
        assert scales.max() * high_px <= high_um * (1 + 1e-9)
        assert scales.max() / scales.min() > 0.8 * (high_um / low_um) / (high_px / low_px)


def _striation_period_px(pixels: np.ndarray, rows: int, pixel_um: float) -> float:
    """Period of the strongest whitened FFT peak within fatigue's physical spacing range."""
    region = pixels[: pixels.shape[0] - rows].astype(np.float64)
    region -= region.mean()
    height, width = region.shape
    region *= np.hanning(height)[:, None] * np.hanning(width)[None, :]
    freq = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :])
    power = np.abs(np.fft.rfft2(region)) ** 2 * freq**2  # whitened: relief no longer wins
    low_um, high_um = FEATURE_SIZE_UM["fatigue"]
    shortest, longest = low_um / pixel_um, min(high_um / pixel_um, width / 4)
    power[(freq < 1 / longest) | (freq > 1 / shortest)] = 0
    return float(1 / freq.flat[int(np.argmax(power))])


def test_striation_spacing_in_pixels_doubles_with_the_magnification(tmp_path: Path) -> None:
    # Prepare / Execute: the same surface (same seed) at 8000x and 16000x
    ratios = []
    for seed in STRIATION_SEEDS:
        periods = []
        for mag in (8000.0, 16000.0):
            path = tmp_path / f"{seed}-{mag:g}.tif"
            rng = np.random.default_rng(seed)
            info = write_micrograph(path, "fatigue", mag, "fei", rng, STRIATION_SPEC)
            pixels = tifffile.imread(path)
            periods.append(_striation_period_px(pixels, info.databar_px, info.pixel_size_um))
        ratios.append(periods[1] / periods[0])
    # Assert: twice the magnification, twice the pixels per striation (a few images have a
    # tear ridge or crack stronger than their striations)
    assert 1.85 <= float(np.median(ratios)) <= 2.15
    assert sum(abs(r - 2.0) <= 0.3 for r in ratios) >= 6, ratios


def test_the_same_seed_writes_the_same_file(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _write(tmp_path / "a", "fatigue", 1000.0, "zeiss", seed=3)
    b = _write(tmp_path / "b", "fatigue", 1000.0, "zeiss", seed=3)
    c = _write(tmp_path / "a", "fatigue", 1000.0, "zeiss", seed=4)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"width": 32}, "MicrographSpec.width=32 must be an integer in [64, 16384]"),
        ({"height": 100.0}, "MicrographSpec.height=100.0 must be an integer"),
        ({"magnifications": ()}, "MicrographSpec.magnifications=() must be a non-empty"),
        ({"magnifications": (1000.0, -5.0)}, "MicrographSpec.magnifications=(1000.0, -5.0)"),
        ({"vendors": ("hitachi",)}, "MicrographSpec.vendors=('hitachi',) must name one or"),
        ({"bit_depth": 12}, "MicrographSpec.bit_depth=12 must be 8 or 16"),
        ({"databar_fraction": 0.3}, "MicrographSpec.databar_fraction=0.3 must be in [0, 0.25)"),
        ({"databar_fraction": 0.01}, "gives a 2-row data bar at height 192; a bar needs at"),
        ({"texture_px": 4096}, "MicrographSpec.texture_px=4096 must be an integer in [64, 2048]"),
    ],
)
def test_a_bad_spec_names_the_field(changes: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"width": 256, "height": 192, **changes}
    with pytest.raises(ValueError, match=re.escape(message)):
        MicrographSpec(**values)  # type: ignore[arg-type]


def test_a_bad_class_vendor_or_magnification_is_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(KeyError, match=r"'spalling'.*valid classes are"):
        write_micrograph(tmp_path / "a.tif", "spalling", 1000.0, "fei", rng, SMALL)
    with pytest.raises(ValueError, match="vendor 'tescan' is not one of"):
        write_micrograph(tmp_path / "a.tif", "fatigue", 1000.0, "tescan", rng, SMALL)
    with pytest.raises(ValueError, match=r"magnification 0\.5 must be a number in"):
        write_micrograph(tmp_path / "a.tif", "fatigue", 0.5, "fei", rng, SMALL)
    assert not list(tmp_path.iterdir())


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.tif"))}


def test_a_set_cycles_magnifications_and_vendors_deterministically(tmp_path: Path) -> None:
    # Prepare
    spec = MicrographSpec(
        width=128, height=96, texture_px=64, magnifications=(500.0, 2000.0), vendors=VENDORS3
    )
    # Execute
    infos = write_micrograph_set(tmp_path / "a", ["fatigue", "ductile"], 6, spec, seed=7)
    write_micrograph_set(tmp_path / "b", ["fatigue", "ductile"], 6, spec, seed=7)
    write_micrograph_set(tmp_path / "c", ["fatigue", "ductile"], 6, spec, seed=8)
    only = write_micrograph_set(tmp_path / "d", ["fatigue", "cleavage"], 6, spec, seed=7)
    # Assert: the layout, every (magnification, vendor) pair per class, the same bytes
    names = sorted(i.path.relative_to(tmp_path / "a").as_posix() for i in infos)
    assert names[0] == "ductile/ductile-0000.tif" and len(names) == 12
    for name in ("fatigue", "ductile"):
        pairs = {(i.magnification, i.vendor) for i in infos if i.class_name == name}
        assert pairs == {(m, v) for m in (500.0, 2000.0) for v in VENDORS3}
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b") != _tree(tmp_path / "c")
    fatigue_a = {k: v for k, v in _tree(tmp_path / "a").items() if k.startswith("fatigue")}
    fatigue_d = {k: v for k, v in _tree(tmp_path / "d").items() if k.startswith("fatigue")}
    assert fatigue_a == fatigue_d and len(only) == 12  # a class does not depend on the others
    manifest = json.loads((tmp_path / "a" / MANIFEST).read_text())
    assert manifest["seed"] == 7 and manifest["images"][0]["path"] == "fatigue/fatigue-0000.tif"
    for info in infos:
        assert read_sem_scale(info.path).pixel_size_um == pytest.approx(
            info.pixel_size_um, rel=1e-12 if info.vendor != "jeol" else 0.05
        )


def test_a_set_refuses_a_foreign_folder_and_replaces_its_own(tmp_path: Path) -> None:
    # Prepare: someone's own images, and a set written before
    foreign = tmp_path / "mine"
    (foreign / "fatigue").mkdir(parents=True)
    (foreign / "fatigue" / "part-17.tif").write_bytes(b"not ours")
    spec = MicrographSpec(width=64, height=64, texture_px=64)
    ours = tmp_path / "set"
    write_micrograph_set(ours, ["fatigue", "ductile"], 2, spec, seed=0)
    # Execute / Assert
    with pytest.raises(ForeignFolderError, match=r"mine is not empty and has no \.micrographs"):
        write_micrograph_set(foreign, ["fatigue", "ductile"], 2, spec, seed=0)
    assert (foreign / "fatigue" / "part-17.tif").read_bytes() == b"not ours"
    write_micrograph_set(ours, ["fatigue", "cleavage"], 1, spec, seed=0)
    assert sorted(_tree(ours)) == ["cleavage/cleavage-0000.tif", "fatigue/fatigue-0000.tif"]
    with pytest.raises(KeyError, match=r"\['spalling'\]"):
        write_micrograph_set(tmp_path / "new", ["fatigue", "spalling"], 1, spec, seed=0)
    with pytest.raises(ValueError, match="per_class=0 must be"):
        write_micrograph_set(tmp_path / "new", ["fatigue", "ductile"], 0, spec, seed=0)
    with pytest.raises(ValueError, match="seed=-1 must be"):
        write_micrograph_set(tmp_path / "new", ["fatigue", "ductile"], 1, spec, seed=-1)
    assert not (tmp_path / "new").exists()


def test_the_data_check_reads_the_scale_of_a_set(tmp_path: Path) -> None:
    spec = MicrographSpec(width=128, height=96, texture_px=64, magnifications=(1000.0,))
    write_micrograph_set(tmp_path, ["fatigue", "ductile"], 2, spec, seed=1)
    report = check_dataset(tmp_path, ["fatigue", "ductile"])
    assert report.ok and report.total_images == 4 and report.skipped == []
    assert dict(report.scale_sources) == {"FEI tags": 2, "Zeiss tags": 2}
    assert report.databars == 2 and report.databars_detected == 2  # Zeiss: from the pixels


def test_a_full_size_micrograph(tmp_path: Path) -> None:
    path = tmp_path / "full.tif"
    info = write_micrograph(path, "ductile", 1000.0, "fei", np.random.default_rng(0))
    pixels = tifffile.imread(path)
    assert pixels.shape == (1536, 2048) and pixels.dtype == np.uint16
    assert info.databar_px == read_sem_scale(path).databar_px == 108
    assert detect_databar(pixels / 65535.0) == 108
    assert info.pixel_size_um == pytest.approx(0.0620117, rel=1e-6)
