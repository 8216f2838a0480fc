"""The members' web page in a real browser (Debian's Chromium, driven by Playwright),
served by a real ``fractofl serve local`` process."""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from fractofl.core.config.taxonomy import DEFAULT_CLASSES
from fractofl.core.images.scale import SemScale
from fractofl.core.synth.sample import render_sample
from fractofl.core.synth.style import SynthStyle
from fractofl.serving.client import EndpointClient
from fractofl.serving.inference import ServedModel, decode_input, model_fn, predict_image
from tests.serving.browser import artifacts_dir
from tests.serving.conftest import (
    API_KEY,
    NO_RATE_LIMIT,
    PublishedModel,
    RunningEndpoint,
    bright_or_dark,
    extracted_model,
    publish_bright_dark_model,
    publish_trained_model,
    start_endpoint,
    stop_endpoint,
)

ANSWER_TIMEOUT_MS = 60_000
JAPANESE_CLASS_NAMES = {
    "fatigue": "疲労破壊",
    "ductile": "延性破壊（ディンプル）",
    "cleavage": "へき開破壊（脆性）",
    "intergranular": "粒界破壊",
}
CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".tif": "image/tiff"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> PublishedModel:
    """A signed version of a small_cnn trained on synthetic images."""
    return publish_trained_model(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="module")
def served(trained: PublishedModel, tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    """The version's artifact loaded in this process: what the page must show."""
    return model_fn(str(extracted_model(trained, tmp_path_factory.mktemp("trained-artifact"))))


@pytest.fixture(scope="module")
def fatigue_png(served: ServedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic SEM image of a fatigue fracture (striations), 96 x 96, 8-bit PNG, among
    the first few rendered the one the model (about 80 % accurate) classifies right."""
    path = tmp_path_factory.mktemp("fatigue") / "fatigue-shaft.png"
    for seed in range(10):
        rng = np.random.default_rng(seed)
        pixels = render_sample("fatigue", SynthStyle(image_size=96), rng, DEFAULT_CLASSES)
        Image.fromarray(pixels).save(path)
        if in_process_answer(served, path)["class"] == "fatigue":
            return path
    raise AssertionError("the trained model calls none of 10 fatigue images fatigue")


@pytest.fixture(scope="module")
def keyed_endpoint(
    trained: PublishedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningEndpoint]:
    """An endpoint of the trained model with an API key and no rate limit."""
    running = start_endpoint(
        [*trained.overrides(), NO_RATE_LIMIT], tmp_path_factory.mktemp("keyed-endpoint"), API_KEY
    )
    yield running
    stop_endpoint(running)


@pytest.fixture(scope="module")
def limited_endpoint(
    trained: PublishedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningEndpoint]:
    """An endpoint without API key that allows 2 requests at once, then one a second."""
    running = start_endpoint(
        [
            *trained.overrides(),
            "serving.rate_limit_per_minute=60",
            "serving.rate_limit_burst=2",
        ],
        tmp_path_factory.mktemp("limited-endpoint"),
        None,
    )
    yield running
    stop_endpoint(running)


MIB = 1024 * 1024


def in_process_answer(served: ServedModel, path: Path) -> dict[str, Any]:
    """The artifact's answer with heat map and preview, computed here."""
    content_type = CONTENT_TYPES[path.suffix] + "; heatmap=true; preview=true"
    return predict_image(decode_input(path.read_bytes(), content_type), served)


def png_levels(field: dict[str, Any]) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(field["png_base64"]))) as image:
        return np.asarray(image)


def open_page(browser: Browser, endpoint: RunningEndpoint) -> tuple[Page, list[str]]:
    """A fresh English page on the endpoint; the list collects every URL it requests."""
    context = browser.new_context(locale="en-US", accept_downloads=True)
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(endpoint.url + "/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    return page, requested


def heatmap_pixels(page: Page, card_index: int) -> dict[str, Any]:
    """The overlay canvas's size, opacity and how many of its pixels are not transparent."""
    return page.evaluate(
        """(index) => {
            const canvas = document.querySelectorAll('#results .heatmap')[index];
            const data = canvas.getContext('2d')
                .getImageData(0, 0, canvas.width, canvas.height).data;
            let visible = 0;
            for (let i = 3; i < data.length; i += 4) if (data[i] > 0) visible += 1;
            return {width: canvas.width, height: canvas.height, visible,
                    opacity: canvas.style.opacity, drawn: canvas.dataset.drawn === 'true'};
        }""",
        card_index,
    )


def test_a_member_sees_class_probabilities_and_heat_map_in_english_and_japanese(
    chromium: Browser,
    keyed_endpoint: RunningEndpoint,
    trained: PublishedModel,
    served: ServedModel,
    fatigue_png: Path,
    images: dict[str, Path],
) -> None:
    # Prepare: the page asks for the key; a wrong one is refused and asked for again
    endpoint = keyed_endpoint
    expected = in_process_answer(served, fatigue_png)
    page, requested = open_page(chromium, endpoint)
    expect(page.get_by_test_id("api-key-panel")).to_be_visible()
    page.get_by_test_id("api-key-input").fill("not-the-key")
    page.get_by_test_id("api-key-save").click()
    # Execute
    page.get_by_test_id("file-input").set_input_files(fatigue_png)
    expect(page.locator("#api-key-error")).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    page.get_by_test_id("api-key-input").fill(endpoint.api_key)
    page.get_by_test_id("api-key-save").click()
    card = page.get_by_test_id("result-card").first
    expect(card).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT_MS)
    # Assert: class, every probability in the classes' order, version, preview, heat map
    label = expected["class"]
    assert label == "fatigue"
    predicted = card.get_by_test_id("predicted-class")
    expect(predicted).to_have_attribute("data-label", label)
    percent = f"{100 * expected['probabilities'][label]:.1f} %"
    expect(predicted).to_contain_text(percent)
    bars = card.get_by_test_id("probabilities").locator("li")
    expect(bars).to_have_count(len(DEFAULT_CLASSES))
    assert [bars.nth(i).get_attribute("data-label") for i in range(4)] == list(DEFAULT_CLASSES)
    shown = [bars.nth(i).locator(".value").inner_text() for i in range(4)]
    assert shown == [f"{100 * expected['probabilities'][c]:.1f} %" for c in DEFAULT_CLASSES]
    expect(page.get_by_test_id("model-version")).to_have_text(f"model {trained.version}")
    # ... and "refer to an expert" exactly when the endpoint says so, with its reasons
    uncertain = card.get_by_test_id("uncertain")
    if expected["uncertain"]:
        expect(uncertain).to_have_text(
            "Uncertain: refer to an expert. " + "; ".join(expected["uncertain_reasons"])
        )
    else:
        expect(uncertain).to_be_hidden()
    # ... and where the model comes from, verified by the endpoint
    origin = expected["provenance"]
    expect(card.get_by_test_id("provenance")).to_have_text(
        f"Model {trained.version}: run {origin['run_id']}, round {origin['round']}; members: "
        f"not recorded; signed by {origin['signer']} (signature verified)"
    )
    assert card.get_by_test_id("preview").evaluate("img => img.naturalWidth") == 96
    heat_levels = png_levels(expected["heatmap"])
    assert np.count_nonzero(heat_levels) > 0, "precondition: the map highlights something"
    page.wait_for_function("document.querySelector('#results .heatmap').dataset.drawn")
    heat = heatmap_pixels(page, 0)
    assert (heat["width"], heat["height"]) == (96, 96)
    assert heat["visible"] == np.count_nonzero(heat_levels)
    # Execute: the opacity slider
    page.get_by_test_id("opacity").fill("20")
    # Assert
    assert heatmap_pixels(page, 0)["opacity"] == "0.2"
    # Execute: Japanese
    page.get_by_test_id("language").click()
    # Assert
    expect(page.locator("h1")).to_have_text("この部品はなぜ壊れたのか？")
    expect(page.locator("html")).to_have_attribute("lang", "ja")
    expect(predicted).to_contain_text(JAPANESE_CLASS_NAMES[label])
    expect(bars.first).to_contain_text(JAPANESE_CLASS_NAMES[DEFAULT_CLASSES[0]])
    if expected["uncertain"]:
        expect(uncertain).to_contain_text("不確か：専門家に確認してください。")
    expect(card.get_by_test_id("provenance")).to_contain_text("記録なし")
    expect(card.get_by_test_id("provenance")).to_contain_text("署名を検証済み")
    expect(page.get_by_test_id("language")).to_have_text("English")
    # Execute: a text file renamed .png
    page.get_by_test_id("file-input").set_input_files(images["text.png"])
    # Assert: a friendly message, in the page's language, and the page keeps working
    broken = page.get_by_test_id("result-card").nth(1)
    expect(broken).to_have_attribute("data-status", "failed", timeout=ANSWER_TIMEOUT_MS)
    expect(page.get_by_test_id("messages")).to_contain_text(
        "「text.png」を画像として読み込めませんでした"
    )
    page.screenshot(path=artifacts_dir() / "web-page-ja.png", full_page=True)
    page.get_by_test_id("language").click()
    expect(page.get_by_test_id("messages")).to_contain_text(
        "“text.png” could not be read as an image"
    )
    expect(broken.get_by_test_id("status")).to_contain_text("could not be read as an image")
    expect(card).to_have_attribute("data-status", "done")
    page.screenshot(path=artifacts_dir() / "web-page-en.png", full_page=True)
    assert all(url.startswith(endpoint.url + "/") for url in requested), requested
    page.context.close()


def test_a_batch_waits_out_the_rate_limit_and_downloads_as_csv(
    chromium: Browser,
    limited_endpoint: RunningEndpoint,
    served: ServedModel,
    fatigue_png: Path,
    images: dict[str, Path],
    tmp_path: Path,
) -> None:
    # Prepare: 4 images (8-bit PNG, JPEG, 16-bit TIFF) and a file of another kind
    batch = [fatigue_png, images["gray.png"], images["gray.jpg"], images["gray16.tif"]]
    notes = tmp_path / "notes.txt"
    notes.write_text("sample 17: broke at 2e5 cycles\n")
    expected = {path.name: in_process_answer(served, path) for path in batch}
    page, requested = open_page(chromium, limited_endpoint)
    statuses: list[int] = []
    page.on(
        "response",
        lambda r: statuses.append(r.status) if r.url.endswith("/invocations") else None,
    )
    expect(page.get_by_test_id("api-key-panel")).to_be_hidden()
    # Execute
    page.get_by_test_id("file-input").set_input_files([*batch, notes])
    # Assert: every image answered although the endpoint refused some requests at first
    cards = page.get_by_test_id("result-card")
    expect(cards).to_have_count(5)
    for index in range(4):
        expect(cards.nth(index)).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT_MS)
    expect(cards.nth(4)).to_have_attribute("data-status", "failed")
    expect(page.get_by_test_id("messages")).to_contain_text(
        "“notes.txt” is not a PNG, JPEG or TIFF file, so it was not sent."
    )
    assert 429 in statuses and statuses.count(200) == 4, statuses
    with Image.open(images["gray16.tif"]) as tiff:
        assert card_preview_width(page, 3) == tiff.width
    expect(page.get_by_test_id("batch-rows").locator("tr")).to_have_count(5)
    # Execute: the CSV
    with page.expect_download() as download:
        page.get_by_test_id("download-csv").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    # Assert
    rows = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8-sig"))))
    assert [row["file"] for row in rows] == [*expected, "notes.txt"]
    for row in rows[:4]:
        answer = expected[row["file"]]
        assert (row["class"], row["status"], row["error"]) == (answer["class"], "done", "")
        assert row["model_version"] == answer["model_version"]
        for name in DEFAULT_CLASSES:
            assert float(row[f"p_{name}"]) == pytest.approx(answer["probabilities"][name], abs=1e-5)
    assert rows[4]["status"] == "failed" and "not a PNG, JPEG or TIFF" in rows[4]["error"]
    assert saved.name == f"fractofl-predictions-{rows[0]['model_version']}.csv"
    assert all(url.startswith(limited_endpoint.url + "/") for url in requested), requested
    page.context.close()


def card_preview_width(page: Page, index: int) -> int:
    preview = page.get_by_test_id("result-card").nth(index).get_by_test_id("preview")
    return int(preview.evaluate("img => img.complete ? img.naturalWidth : 0"))


MAP_TILE, MAP_PIXEL_UM = 32, 0.1
TAB10 = {"fatigue": (31, 119, 180), "ductile": (255, 127, 14)}


@pytest.fixture(scope="module")
def physical_published(tmp_path_factory: pytest.TempPathFactory) -> PublishedModel:
    """A physical-scale model that calls bright tiles fatigue and dark ones ductile."""
    return publish_bright_dark_model(tmp_path_factory.mktemp("physical"), MAP_TILE, MAP_PIXEL_UM)


@pytest.fixture(scope="module")
def physical_endpoint(
    physical_published: PublishedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningEndpoint]:
    """An endpoint of the physical-scale model."""
    running = start_endpoint(
        [*physical_published.overrides(), NO_RATE_LIMIT],
        tmp_path_factory.mktemp("physical-endpoint"),
        None,
    )
    yield running
    stop_endpoint(running)


def test_a_member_sees_the_mechanism_map_with_its_legend(
    chromium: Browser, physical_endpoint: RunningEndpoint, tmp_path: Path
) -> None:
    # Prepare: a 320 x 224 surface, bright (fatigue) on the left, dark (ductile) on the right
    rng = np.random.default_rng(1)
    halves = [bright_or_dark(rng, label, (224, 160)) for label in (0, 1)]
    path = tmp_path / "mixed-surface.png"
    Image.fromarray(np.round(np.concatenate(halves, axis=1) * 255).astype(np.uint8)).save(path)
    page, _ = open_page(chromium, physical_endpoint)
    # Execute: the image's pixel size and the map asked for, then the file
    page.get_by_test_id("pixel-size").fill(str(MAP_PIXEL_UM))
    page.get_by_test_id("want-map").check()
    page.get_by_test_id("file-input").set_input_files(path)
    card = page.get_by_test_id("result-card").first
    expect(card).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT_MS)
    page.wait_for_function("document.querySelector('#results .map').dataset.drawn")
    # Assert: each half in its class's colour
    colours = page.evaluate(
        """() => {
            const canvas = document.querySelector('#results .map');
            const context = canvas.getContext('2d');
            const at = (x, y) => Array.from(context.getImageData(x, y, 1, 1).data);
            return {size: [canvas.width, canvas.height], left: at(60, 112), right: at(260, 112)};
        }"""
    )
    assert colours["size"] == [320, 224]
    for side, label in (("left", "fatigue"), ("right", "ductile")):
        red, green, blue, alpha = colours[side]
        assert alpha > 0
        assert np.allclose((red, green, blue), TAB10[label], atol=4), (side, colours[side])
    # ... and the legend: every class's area fraction, the two halves about half each
    legend = card.get_by_test_id("map-legend")
    expect(legend).to_be_visible()
    shares = {
        item.get_attribute("data-label"): item.inner_text() for item in legend.locator("li").all()
    }
    assert list(shares) == list(DEFAULT_CLASSES)
    for label in ("fatigue", "ductile"):
        fraction = float(shares[label].rsplit(": ", 1)[1].rstrip(" %")) / 100
        assert fraction == pytest.approx(0.5, abs=0.1), shares
    expect(card.get_by_test_id("map-dominant")).to_contain_text("covers the most area")
    # ... in Japanese too
    page.get_by_test_id("language").click()
    expect(card.get_by_test_id("map-dominant")).to_contain_text("最も広い領域は")
    expect(legend).to_contain_text("延性破壊（ディンプル）")
    page.screenshot(path=artifacts_dir() / "web-page-map.png", full_page=True)


PAGE_LIMIT_MIB = 0.5  # under the 1.2 MB PNG below, over its 294 KB at the model's scale


def test_an_image_over_the_limit_is_brought_to_the_models_scale_in_the_browser(
    chromium: Browser,
    physical_published: PublishedModel,
    tmp_path: Path,
) -> None:
    # Prepare: a 1280 x 960 surface at 4x the model's resolution, with a white data bar, as
    # an 8-bit PNG, a 16-bit TIFF and a deflate-compressed 16-bit TIFF; an endpoint that
    # takes 0.5 MiB
    rng = np.random.default_rng(3)
    surface = np.concatenate(
        [bright_or_dark(rng, 0, (920, 420)), bright_or_dark(rng, 1, (920, 860))], axis=1
    )
    image = np.concatenate([surface, np.ones((40, 1280), np.float32)])
    path = tmp_path / "large-surface.png"
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(path)
    tiff, deflated = tmp_path / "large-surface.tif", tmp_path / "deflated.tif"
    sixteen = Image.fromarray(np.round(image * 65535).astype(np.uint16))
    sixteen.save(tiff)
    sixteen.save(deflated, compression="tiff_adobe_deflate")
    assert min(p.stat().st_size for p in (path, tiff, deflated)) > PAGE_LIMIT_MIB * MIB
    limit = f"serving.max_payload_mb={PAGE_LIMIT_MIB}"
    running = start_endpoint(
        [*physical_published.overrides(), NO_RATE_LIMIT, limit], tmp_path, None
    )
    try:
        client, scale = EndpointClient(running.url), SemScale(MAP_PIXEL_UM / 4)
        expected = {p.name: client.predict(p, scale=scale) for p in (path, tiff)}
        page, _ = open_page(chromium, running)
        # Execute
        page.get_by_test_id("pixel-size").fill(str(MAP_PIXEL_UM / 4))
        page.get_by_test_id("want-map").check()
        page.get_by_test_id("file-input").set_input_files([path, tiff, deflated])
        # Assert: PNG and TIFF answered as `fractofl predict` answers them (the TIFF with its
        # 16 bits), and the page says how
        cards = page.get_by_test_id("result-card")
        for index in (0, 1):
            card = cards.nth(index)
            expect(card).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT_MS)
            expect(card.get_by_test_id("prepared")).to_contain_text(
                "Sent at the model's scale (1280×960 → 320×230 pixels)"
            )
        assert all(
            "sent at the model's scale (1280x960 px -> 320x230 px" in answer.preparation
            for answer in expected.values()
        )
        expect(cards.nth(2)).to_have_attribute("data-status", "failed")
        with page.expect_download() as download:
            page.get_by_test_id("download-csv").click()
        saved = tmp_path / download.value.suggested_filename
        download.value.save_as(saved)
        rows = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8-sig"))))
        for row in rows[:2]:
            answer = expected[row["file"]]
            assert row["class"] == answer.label
            for name, probability in answer.probabilities.items():
                assert float(row[f"p_{name}"]) == pytest.approx(probability, abs=1e-4)
        page.wait_for_function("document.querySelector('#results .map').dataset.drawn")
        # ... and the deflated TIFF, which the page cannot read, is refused with what to do
        expect(page.get_by_test_id("messages")).to_contain_text(
            f"“deflated.tif” is {deflated.stat().st_size / MIB:.1f} MB, over the endpoint's 0.5 "
            "MB, and this page cannot read it"
        )
        expect(page.get_by_test_id("messages")).to_contain_text(
            "Run `fractofl predict`, which does."
        )
        # ... and a pixel size that would blow the image up is refused before any pixel is made
        page.get_by_test_id("pixel-size").fill("100")
        page.get_by_test_id("file-input").set_input_files(path)
        expect(cards.nth(3)).to_have_attribute("data-status", "failed")
        expect(page.get_by_test_id("messages")).to_contain_text(
            "at the model's scale would be 1280000×920000 pixels"
        )
        page.get_by_test_id("language").click()
        expect(cards.first.get_by_test_id("prepared")).to_contain_text("モデルのスケールに縮小")
        page.context.close()
    finally:
        stop_endpoint(running)
