"""fractofl's CUDA paths checked, and timed beside the CPU, on a machine with a GPU.

Usage::

    python bench/programs/gpu_check.py train OUT.json
    python bench/programs/gpu_check.py serve MODEL_DIR OUT.json

``train``: the members' training loop (``core/learning/training.py``) on a ResNet-18 at
224 x 224 grayscale, batch 32, on CUDA and on the CPU from the same initial weights:
seconds per step (alone, and within an epoch of ``STEPS`` steps), and the loss of both
after the same steps (they should agree closely).
``serve``: an extracted artifact's own ``code/inference.py`` (as SageMaker runs it):
``model_fn`` must put the model on CUDA; ``transform_fn`` on a 224 x 224 PNG and a
2048 x 1536 16-bit TIFF, with and without a heat map, on CUDA and on a CPU copy of the
same model: the answers must agree, and the p50 time of each is reported.

It needs only torch, torchvision, numpy and Pillow (no flwr, Hydra or cryptography), so it
runs on an accelerator machine's own Python; ``fractofl`` must be importable for
``train`` (e.g. a folder on PYTHONPATH holding a link named ``fractofl`` to the
repository). Exits non-zero when a check fails.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ACCELERATOR = os.environ.get("FRACTOFL_GPU_CHECK_DEVICE", "cuda")
"""``cpu`` runs the whole check on the CPU twice: a smoke test of this script without a GPU."""
BATCH = 32
SIZE = 224
STEPS = 8
CLASSES = 4


def timed(call: Callable[[], Any], repeat: int, cuda: bool) -> float:
    """The median seconds of ``call`` after two warm-up calls."""
    for _ in range(2):
        call()
    samples = []
    for _ in range(repeat):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        call()
        if cuda:
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def batches(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``STEPS`` batches of noisy images whose mean brightness tells the class."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(STEPS):
        labels = rng.integers(0, CLASSES, BATCH)
        images = rng.normal(0, 1, (BATCH, 1, SIZE, SIZE)) + labels[:, None, None, None] * 0.5
        out.append((torch.tensor(images, dtype=torch.float32), torch.tensor(labels)))
    return out


def check_training() -> dict[str, Any]:
    """One epoch of ``STEPS`` steps on each device, from the same weights; on the
    accelerator also with ``train.mixed_precision=auto`` (float16 autocast on CUDA)."""
    from fractofl.core.learning.precision import FULL_PRECISION, precision_for
    from fractofl.core.learning.training import train
    from fractofl.core.model.architectures import build_model

    torch.manual_seed(0)
    initial = build_model("resnet18", num_classes=CLASSES)
    loader = batches(0)
    report: dict[str, Any] = {}
    runs = (
        ("gpu", ACCELERATOR, FULL_PRECISION),
        ("gpu_mixed", ACCELERATOR, precision_for("auto", torch.device(ACCELERATOR))),
        ("cpu", "cpu", FULL_PRECISION),
    )
    for key, name, precision in runs:
        model = copy.deepcopy(initial)
        device = torch.device(name)
        fit = functools.partial(train, momentum=0.9, weight_decay=0.0, precision=precision)
        # The same step 5 times, timed (train() runs a whole epoch: STEPS steps).
        started = time.perf_counter()
        result = fit(model, loader, 1, 0.01, device=device)
        if name == "cuda":
            torch.cuda.synchronize()
        first_epoch_s = time.perf_counter() - started
        cuda = name == "cuda"
        step_s = timed(functools.partial(fit, model, loader[:1], 1, 0.01, device=device), 5, cuda)
        epoch_s = timed(functools.partial(fit, model, loader, 1, 0.01, device=device), 3, cuda)
        report[key] = {
            "first_epoch_s": first_epoch_s,
            "step_in_epoch_s": epoch_s / STEPS,
            "step_s": step_s,
            "images_per_s": BATCH / step_s,
            "epoch_loss": result.loss,
        }
    report["loss_difference"] = abs(report["gpu"]["epoch_loss"] - report["cpu"]["epoch_loss"])
    report["speedup"] = report["cpu"]["step_s"] / report["gpu"]["step_s"]
    report["mixed_speedup"] = report["gpu"]["step_s"] / report["gpu_mixed"]["step_s"]
    report["mixed_loss_difference"] = abs(
        report["gpu_mixed"]["epoch_loss"] - report["gpu"]["epoch_loss"]
    )
    report["ok"] = bool(
        np.isfinite(report["gpu"]["epoch_loss"])
        and report["loss_difference"] < 0.05
        and report["mixed_loss_difference"] < 0.05
    )
    return report


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def tiff16(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint16)).save(buffer, format="TIFF")
    return buffer.getvalue()


def check_serving(model_dir: Path) -> dict[str, Any]:
    """model_fn on CUDA; transform_fn on CUDA against a CPU copy, timed."""
    sys.path.insert(0, str(model_dir / "code"))  # as the SageMaker container does
    import inference  # the artifact's own, with its vendored fractofl

    on_gpu = inference.model_fn(str(model_dir))
    if ACCELERATOR == "cpu":  # the smoke test: model_fn chose the CPU itself
        on_gpu = dataclasses.replace(on_gpu, device=torch.device("cpu"))
    on_cpu = dataclasses.replace(
        on_gpu, network=copy.deepcopy(on_gpu.network).cpu(), device=torch.device("cpu")
    )
    rng = np.random.default_rng(1)
    requests = {
        "224 x 224 PNG": (png(rng.integers(0, 256, (224, 224), dtype=np.uint8)), "image/png"),
        "2048 x 1536 16-bit TIFF": (
            tiff16(rng.integers(0, 65536, (1536, 2048))),
            "image/tiff",
        ),
    }
    physical = on_gpu.preprocessing.physical
    # A physical-scale model: each image at the model's own scale, and its mechanism map.
    scale = f"; pixel_size_um={on_gpu.preprocessing.pixel_size_um}" if physical else ""
    options = [("", ""), ("; heatmap=true", ", heat map")]
    if physical:
        options.append(("; map=true", ", mechanism map"))
    report: dict[str, Any] = {"model_device": str(on_gpu.device), "cases": {}}
    ok = on_gpu.device.type == ACCELERATOR
    for name, (body, kind) in requests.items():
        for option, label_suffix in options:
            content_type = kind + scale + option

            def answer(model: Any, body: bytes = body, content_type: str = content_type) -> Any:
                return json.loads(inference.transform_fn(model, body, content_type, None)[0])

            gpu, cpu = answer(on_gpu), answer(on_cpu)
            difference = max(
                abs(gpu["probabilities"][c] - cpu["probabilities"][c]) for c in gpu["classes"]
            )
            agree = gpu["class"] == cpu["class"] and difference < 1e-3
            ok &= agree
            label = name + label_suffix
            if "map" in gpu:
                report.setdefault("map_tiles", {})[label] = gpu["map"]["rows"] * gpu["map"]["cols"]
            report["cases"][label] = {
                "agree": agree,
                "max_probability_difference": difference,
                "gpu_s": timed(lambda: answer(on_gpu), 10, ACCELERATOR == "cuda"),
                "cpu_s": timed(lambda: answer(on_cpu), 3, False),
            }
    report["ok"] = ok
    return report


def main(argv: list[str]) -> int:
    if ACCELERATOR == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here", file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name(0) if ACCELERATOR == "cuda" else "none (smoke test)"
    header = {"torch": torch.__version__, "gpu": gpu}
    if argv[0] == "train":
        report = {**header, "training": check_training()}
        out = Path(argv[1])
    else:
        report = {**header, "serving": check_serving(Path(argv[1]))}
        out = Path(argv[2])
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    section = report.get("training") or report.get("serving")
    return 0 if section["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
