"""One member process preparing its images through the cache and training one pass on
them: prints JSON with the images, decoded and reused counts, seconds to prepare, seconds
to train and the process's peak resident memory (bench part members).

Usage: member_images.py FOLDER CACHE PIXEL_SIZE_UM [--train]
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch

from fractofl.core.config.taxonomy import DEFAULT_CLASSES
from fractofl.core.images.cached_images import load_cached_images
from fractofl.core.images.labelled import make_loader
from fractofl.core.images.preprocessing import Preprocessing
from fractofl.core.learning.device import resolve_device
from fractofl.core.learning.training import train
from fractofl.core.model.architectures import build_model

TILE = 64
TILES_PER_IMAGE = 4


def main() -> None:
    folder, cache, pixel_size = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    preprocessing = Preprocessing(image_size=TILE, pixel_size_um=pixel_size)
    started = time.perf_counter()
    data = load_cached_images(folder, DEFAULT_CLASSES, preprocessing, cache)
    prepared_s = time.perf_counter() - started
    train_s = 0.0
    if "--train" in sys.argv:
        torch.manual_seed(0)
        model = build_model("small_cnn", num_classes=len(DEFAULT_CLASSES), width=16)
        loader = make_loader(data.for_training(TILES_PER_IMAGE), 32, True, None, 0)
        started = time.perf_counter()
        train(model, loader, 1, 0.05, 0.9, 0.0, resolve_device("cpu"))
        train_s = time.perf_counter() - started
    result = {
        "images": len(data),
        "decoded": data.report.decoded,
        "reused": data.report.reused,
        "prepare_s": prepared_s,
        "train_s": train_s,
        "prepared_gib": sum(s.nbytes for s in data.stored) / 2**30,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
