"""How often answers are "uncertain" (refer to an expert), on the coordinator's test images
and on images that are not fracture surfaces, made here: uniform noise, printed text,
smooth natural-looking fields, and SEM-like images of things outside the taxonomy
(particles on a substrate, a scratched polished surface). Every image goes through the
served model's own ``decode_input`` and ``predict_image`` (the artifact, in process).

Usage: uncertain_rates.py MODEL_DIR TEST_DIR COUNT; prints JSON (one line).
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fractofl.serving.inference import decode_input, model_fn, predict_image

SIZE = 128
Maker = Callable[[np.random.Generator], Image.Image]


def _noise(rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8))


def _text(rng: np.random.Generator) -> Image.Image:
    image = Image.new("L", (SIZE, SIZE), int(rng.integers(200, 256)))
    draw = ImageDraw.Draw(image)
    words = ["fracture", "report", "sample", "lot 42", "steel", "2026", "page 3", "ok"]
    for line in range(8):
        text = " ".join(rng.choice(words, 3))
        draw.text((4, 4 + 15 * line), text, fill=int(rng.integers(0, 60)))
    return image


def _smooth_field(rng: np.random.Generator) -> Image.Image:
    field = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8))
    return field.filter(ImageFilter.GaussianBlur(float(rng.uniform(6, 16)))).point(
        lambda v: max(0, min(255, int((v - 128) * 6 + 128)))
    )


def _particles(rng: np.random.Generator) -> Image.Image:
    image = Image.new("L", (SIZE, SIZE), int(rng.integers(20, 60)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(5, 20))):
        x, y, r = rng.uniform(0, SIZE), rng.uniform(0, SIZE), rng.uniform(3, 14)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=int(rng.integers(150, 256)))
    noisy = np.asarray(image, np.float32) + rng.normal(0, 12, (SIZE, SIZE))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _scratches(rng: np.random.Generator) -> Image.Image:
    image = Image.new("L", (SIZE, SIZE), int(rng.integers(110, 170)))
    draw = ImageDraw.Draw(image)
    angle = rng.uniform(0, np.pi)
    dx, dy = np.cos(angle) * SIZE * 2, np.sin(angle) * SIZE * 2
    for _ in range(int(rng.integers(10, 40))):
        x, y = rng.uniform(0, SIZE), rng.uniform(0, SIZE)
        draw.line((x - dx, y - dy, x + dx, y + dy), fill=int(rng.integers(60, 220)), width=1)
    noisy = np.asarray(image, np.float32) + rng.normal(0, 6, (SIZE, SIZE))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


KINDS: dict[str, Maker] = {
    "uniform noise": _noise,
    "printed text": _text,
    "smooth natural-looking fields": _smooth_field,
    "SEM-like: particles on a substrate": _particles,
    "SEM-like: scratched polished surface": _scratches,
}


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _rates(model: object, bodies: list[bytes]) -> dict[str, float]:
    flagged = low = unlike = 0
    for body in bodies:
        answer = predict_image(decode_input(body, "image/png"), model)  # type: ignore[arg-type]
        reasons = answer["uncertain_reasons"]
        flagged += bool(answer["uncertain"])
        low += any(r.startswith("low confidence") for r in reasons)
        unlike += any(r.startswith("unlike the images") for r in reasons)
    count = max(len(bodies), 1)
    return {
        "images": len(bodies),
        "uncertain": flagged / count,
        "low_confidence": low / count,
        "out_of_distribution": unlike / count,
    }


def main(model_dir: str, test_dir: str, count: str) -> None:
    model = model_fn(model_dir)
    rng = np.random.default_rng(0)
    results = {}
    test_images = sorted(p for p in Path(test_dir).rglob("*.png"))
    results["coordinator test images (fracture surfaces)"] = _rates(
        model, [p.read_bytes() for p in test_images]
    )
    for name, make in KINDS.items():
        results[name] = _rates(model, [_png(make(rng)) for _ in range(int(count))])
    results["_model"] = {
        "version": model.version,
        "temperature": model.temperature,
        "ood_energy_threshold": model.ood_energy_threshold,
        "min_confidence": model.min_confidence,
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:])
