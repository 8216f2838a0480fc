"""Physical scale: micrographs of FEI, Zeiss and JEOL microscopes brought to one
micrometres-per-pixel scale without their data bar, cut into tiles for training,
evaluated on a grid of tiles; images that cannot be used are skipped with the reason."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from fractofl.core.images.cached_images import load_cached_images
from fractofl.core.images.physical_scale import ScaleError, at_physical_scale, rescale
from fractofl.core.images.preprocessing import Preprocessing
from fractofl.core.images.scale import SemScale
from fractofl.core.images.tiles import grid_positions, tile_mean_log_probabilities
from fractofl.core.learning.training import evaluate
from fractofl.core.model.architectures import build_model

CLASSES = ("fatigue", "ductile")
FEI_TAG, ZEISS_TAG = 34682, 34118
TILE = 16
PREP = Preprocessing(image_size=TILE, pixel_size_um=0.1, tile_grid=2)
SURFACE = (0.3, 0.7)  # a surface's grey values; data bars are 0 with glyphs of 1


def _micrograph(rows: int, cols: int, bar: int, seed: int = 0) -> np.ndarray:
    """16-bit pixels: a surface in SURFACE above a black data bar with white glyphs."""
    rng = np.random.default_rng(seed)
    unit = rng.uniform(*SURFACE, (rows, cols))
    if bar:
        unit[rows - bar :] = 0.0
        unit[rows - bar + 1 : rows - 1, 2 : cols // 5] = 1.0  # a line of "text"
    return (unit * 65535).round().astype(np.uint16)


def _fei(
    path: Path, pixel_m: float, bar: int, rows: int = 96, cols: int = 128, **kw: float
) -> Path:
    height_m = kw.get("pixel_height_m", pixel_m)
    text = (
        f"[Scan]\nPixelWidth={pixel_m!r}\nPixelHeight={height_m!r}\n"
        f"[PrivateFei]\nDatabarHeight={bar}\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, _micrograph(rows, cols, bar), extratags=[(FEI_TAG, "s", 0, text, True)])
    return path


def _zeiss(path: Path, pixel_nm: float, bar: int, rows: int = 96, cols: int = 128) -> Path:
    text = "\r\n".join(["", "AP_IMAGE_PIXEL_SIZE", f"Image Pixel Size = {pixel_nm} nm", ""])
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(
        path, _micrograph(rows, cols, bar, 1), extratags=[(ZEISS_TAG, "s", 0, text, True)]
    )
    return path


def _jeol(path: Path, um_per_px: float, bar: int, rows: int = 96, cols: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, _micrograph(rows, cols, bar, 2))
    bar_px = 100
    path.with_suffix(".txt").write_text(
        f"$CM_MAG 5000\n$$SM_MICRON_BAR {bar_px}\n$$SM_MICRON_MARKER {um_per_px * bar_px:g}um\n"
    )
    return path


def _plain(path: Path, rows: int = 96, cols: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, _micrograph(rows, cols, 0, 3))
    return path


def test_every_vendor_comes_to_the_model_scale_and_no_data_bar_pixel_reaches_a_tile(
    tmp_path: Path,
) -> None:
    root = tmp_path / "member"
    _fei(root / "fatigue" / "fei.tif", 0.05e-6, bar=12)  # metadata gives the bar
    _zeiss(root / "fatigue" / "zeiss.tif", 200.0, bar=10)  # the bar is detected
    _jeol(root / "ductile" / "jeol.tif", 0.1, bar=8)  # sidecar scale, detected bar
    data = load_cached_images(root, CLASSES, PREP, tmp_path / "cache")
    assert data.report.decoded == 3 and not data.report.skipped
    shapes = [(s.height, s.width) for s in data.stored]
    # 0.05 um pixels halve to 0.1 um, 0.2 um double, 0.1 um stay: (rows - bar) x cols.
    assert shapes == [(84 // 2, 64), ((96 - 10) * 2, 256), (96 - 8, 128)]
    for index, stored in enumerate(data.stored):
        pixels = stored.read()
        assert pixels.min() > SURFACE[0] - 0.02 and pixels.max() < SURFACE[1] + 0.02
        grid = data.image(index)  # the evaluation tiles, normalised
        assert grid.shape == (4, 1, TILE, TILE)
        assert float(grid.min()) * PREP.std + PREP.mean > SURFACE[0] - 0.02
    torch.manual_seed(0)
    training = data.for_training(tiles_per_image=5)
    assert len(training) == 15 and training.y.tolist() == [0] * 10 + [1] * 5
    tiles = torch.stack([training[i][0] for i in range(len(training))])
    assert tiles.shape == (15, 1, TILE, TILE)
    assert float(tiles.min()) * PREP.std + PREP.mean > SURFACE[0] - 0.02
    torch.manual_seed(0)
    again = torch.stack([training[i][0] for i in range(len(training))])
    assert torch.equal(tiles, again)  # seeded: reproducible


def test_images_that_cannot_be_brought_to_scale_are_skipped_with_the_reason(
    tmp_path: Path,
) -> None:
    root = tmp_path / "member"
    _fei(root / "fatigue" / "good.tif", 0.1e-6, bar=8)
    _plain(root / "fatigue" / "no-scale.tif")
    _fei(root / "fatigue" / "contradictory.tif", 0.1e-6, bar=8, pixel_height_m=0.3e-6)
    _fei(root / "ductile" / "tiny.tif", 0.01e-6, bar=8)  # 128 x 88 at 0.01 um -> 13 x 9
    _fei(root / "ductile" / "all-bar.tif", 0.1e-6, bar=96)
    _fei(root / "ductile" / "zero.tif", 0.0, bar=8)  # a zero pixel size is no scale
    data = load_cached_images(root, CLASSES, PREP, tmp_path / "cache")
    assert len(data) == 1
    reasons = {path.name: why for path, why in data.report.skipped}
    assert "no known pixel size" in reasons["no-scale.tif"]
    assert (
        "scale.yaml" in reasons["no-scale.tif"] and "data.unknown_scale" in reasons["no-scale.tif"]
    )
    assert "contradict" in reasons["contradictory.tif"]
    assert "smaller than one 16x16 tile" in reasons["tiny.tif"]
    assert "covers the whole image" in reasons["all-bar.tif"]
    assert "no known pixel size" in reasons["zero.tif"]
    as_is = load_cached_images(root, CLASSES, PREP, tmp_path / "cache", unknown_scale="as_is")
    assert len(as_is) == 4  # no-scale, contradictory and zero taken at the model's scale


def test_a_changed_scale_file_prepares_its_images_again(tmp_path: Path) -> None:
    root = tmp_path / "member"
    _plain(root / "fatigue" / "a.tif")
    (root / "scale.yaml").write_text("pixel_size_um: 0.1\n")
    first = load_cached_images(root, CLASSES, PREP, tmp_path / "cache")
    assert (first.stored[0].height, first.stored[0].width) == (96, 128)
    assert load_cached_images(root, CLASSES, PREP, tmp_path / "cache").report.decoded == 0
    (root / "scale.yaml").write_text("pixel_size_um: 0.2\ndatabar_px: 6\n")
    second = load_cached_images(root, CLASSES, PREP, tmp_path / "cache")
    assert second.report.decoded == 1
    assert (second.stored[0].height, second.stored[0].width) == (180, 256)


def test_rescale_and_crop_are_exact_where_they_can_be() -> None:
    pixels = np.linspace(0, 1, 40 * 60, dtype=np.float32).reshape(40, 60)
    assert rescale(pixels, 0.1, 0.1) is not None and rescale(pixels, 0.1, 0.1).shape == (40, 60)
    assert rescale(pixels, 0.05, 0.1).shape == (20, 30)
    with pytest.raises(ScaleError, match="no known pixel size"):
        at_physical_scale(pixels, SemScale(None), 0.1, "x.tif")
    with pytest.raises(ScaleError, match="above"):
        at_physical_scale(pixels, SemScale(1000.0), 0.001, "x.tif")  # a scale.yaml typo


def test_preprocessing_records_its_scale_only_when_it_has_one() -> None:
    whole = Preprocessing(image_size=32)
    assert "pixel_size_um" not in whole.to_dict()  # reads as models made before it
    assert Preprocessing.from_dict(PREP.to_dict()) == PREP
    assert PREP.cache_key() != Preprocessing(TILE, pixel_size_um=0.2).cache_key()
    # Tiles and normalisation come when read: they do not change what is cached.
    assert PREP.cache_key() == Preprocessing(64, mean=0.3, pixel_size_um=0.1).cache_key()
    with pytest.raises(ValueError, match="pixel_size_um"):
        Preprocessing(32, pixel_size_um=-1)
    assert grid_positions(20, 30, 16, 2) == [(0, 0), (0, 14), (4, 0), (4, 14)]


def test_evaluation_judges_an_image_by_the_mean_of_its_tiles() -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=2, width=8)
    model.eval()
    tiles = torch.randn(3, 4, 1, TILE, TILE)
    labels = torch.tensor([0, 1, 1])
    with torch.no_grad():
        expected = torch.stack(
            [torch.softmax(model(tiles[i]), dim=1).mean(dim=0) for i in range(3)]
        )
        got = tile_mean_log_probabilities(model, tiles).exp()
    assert torch.allclose(got, expected, atol=1e-6)
    result = evaluate(model, [(tiles, labels)], 2, torch.device("cpu"))
    assert result.examples == 3  # images, not tiles
    assert result.accuracy == pytest.approx(float((expected.argmax(1) == labels).float().mean()))


def test_the_endpoint_judges_an_image_as_the_members_evaluation_does(tmp_path: Path) -> None:
    from fractofl.serving.inference import ServedModel, decode_input, predict_image
    from fractofl.serving.request_errors import ImageScaleError

    torch.manual_seed(0)
    network = build_model("small_cnn", num_classes=2, width=8).eval()
    served = ServedModel(network, PREP, CLASSES, "v1", torch.device("cpu"), False, "small_cnn")
    path = _fei(tmp_path / "member" / "fatigue" / "a.tif", 0.05e-6, bar=12)
    member = load_cached_images(tmp_path / "member", CLASSES, PREP, tmp_path / "cache")
    with torch.no_grad():
        expected = tile_mean_log_probabilities(network, member.image(0)[None]).exp()[0]
    body = path.read_bytes()
    request = decode_input(body, "image/tiff; pixel_size_um=0.05; databar_px=12")
    answer = predict_image(request, served)
    assert list(answer["probabilities"].values()) == pytest.approx(expected.tolist(), abs=1e-6)
    mapped = predict_image(
        decode_input(body, "image/tiff; pixel_size_um=0.05; databar_px=12; heatmap=true"), served
    )
    assert (mapped["heatmap"]["width"], mapped["heatmap"]["height"]) == (128, 96)
    heat = np.array(Image.open(io.BytesIO(base64.b64decode(mapped["heatmap"]["png_base64"]))))
    assert heat[-12:].max() == 0 and heat[:-12].max() > 0  # the data bar is no evidence
    with pytest.raises(ImageScaleError, match=r"pixel_size_um=0\.05") as refused:
        predict_image(decode_input(body, "image/tiff"), served)
    assert refused.value.status_code == 400
    with pytest.raises(ImageScaleError, match="positive"):
        decode_input(body, "image/tiff; pixel_size_um=-1")
    with pytest.raises(ImageScaleError, match="smaller than one"):
        predict_image(decode_input(body, "image/tiff; pixel_size_um=0.005"), served)
    # The worst legal case: a pixel size that resamples the image to just under the
    # preprocessing's limit (8320 x 5460 pixels here), with a heat map.
    worst = "image/tiff; pixel_size_um=6.5; databar_px=12; heatmap=true"
    answer = predict_image(decode_input(body, worst), served)
    assert (answer["heatmap"]["width"], answer["heatmap"]["height"]) == (128, 96)
    with pytest.raises(ImageScaleError, match="above 50000000"):
        predict_image(decode_input(body, "image/tiff; pixel_size_um=10; databar_px=12"), served)


def test_the_data_check_names_images_smaller_than_one_tile(tmp_path: Path) -> None:
    from fractofl.core.images.data_check import check_dataset, format_report

    root = tmp_path / "member"
    _fei(root / "fatigue" / "good.tif", 0.1e-6, bar=8)
    _fei(root / "ductile" / "tiny.tif", 0.01e-6, bar=8)
    report = check_dataset(root, CLASSES, model_scale=(0.1, TILE))
    assert [(s.path.name, s.width, s.height) for s in report.below_one_tile] == [
        ("tiny.tif", 13, 9)
    ]
    text = format_report(report)
    assert "Smaller than one 16x16 tile at the model's 0.1 um per pixel" in text
    assert "ductile/tiny.tif: 13x9 at that scale" in text
    assert report.to_dict()["scale"]["below_one_tile"][0]["path"] == "ductile/tiny.tif"
    assert not check_dataset(root, CLASSES).below_one_tile  # a whole-image model: no tiles
