"""A member's resident memory does not grow with its number of images: they are prepared
into the on-disk cache and read a tile (training) or an image (evaluation) at a time."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from fractofl.core.synth.micrograph import MicrographSpec, write_micrograph

SPEC = MicrographSpec(width=1024, height=768, texture_px=256)
FEW, MANY = 40, 320
# A member process (torch, a model, one image being decoded) varies by a few tens of MB
# between runs; holding the MANY - FEW extra prepared images would add about 200 MB.
GROWTH_BOUND_MB = 60

MEASURE = """
import resource, sys
from pathlib import Path
import torch
from torch.utils.data import DataLoader
from fractofl.core.images.cached_images import load_cached_images
from fractofl.core.images.preprocessing import Preprocessing
from fractofl.core.model.architectures import build_model

root, cache = Path(sys.argv[1]), Path(sys.argv[2])
prep = Preprocessing(image_size=64, pixel_size_um=0.125)
data = load_cached_images(root, ["fatigue", "ductile"], prep, cache)
prepared_mb = sum(s.nbytes for s in data.stored) / 2**20
model = build_model("small_cnn", num_classes=2, width=8)
torch.manual_seed(0)
with torch.no_grad():
    for tiles, _ in DataLoader(data.for_training(4), batch_size=32, shuffle=True):
        model(tiles)
    for index in range(len(data)):
        model(data.image(index))
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(len(data), data.report.decoded, round(prepared_mb), round(peak_mb))
"""


def _member_folder(root: Path, pool: list[Path], count: int) -> Path:
    """``count`` distinct files (one trailing byte apart, which TIFF readers ignore) made
    from ``pool``: each is hashed, decoded and cached on its own."""
    for index in range(count):
        source = pool[index % len(pool)]
        target = root / ("fatigue" if index % 2 else "ductile") / f"{index:04d}.tif"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        with target.open("ab") as handle:
            handle.write(index.to_bytes(4, "little"))
    return root


def _measure(root: Path, cache: Path) -> tuple[int, int, int, int]:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(root), str(cache)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    images, decoded, prepared_mb, peak_mb = map(int, done.stdout.split())
    return images, decoded, prepared_mb, peak_mb


def test_resident_memory_stays_flat_from_few_to_many_large_images(tmp_path: Path) -> None:
    pool = []
    for seed in range(4):
        path = tmp_path / "pool" / f"{seed}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        vendor = ("fei", "zeiss")[seed % 2]
        write_micrograph(path, "ductile", 2000.0, vendor, np.random.default_rng(seed), SPEC)
        pool.append(path)
    few = _measure(_member_folder(tmp_path / "few", pool, FEW), tmp_path / "cache-few")
    many = _measure(_member_folder(tmp_path / "many", pool, MANY), tmp_path / "cache-many")
    assert (few[0], few[1], many[0], many[1]) == (FEW, FEW, MANY, MANY)  # all decoded
    assert many[2] - few[2] > 150  # the prepared images really are that much bigger
    assert many[3] - few[3] < GROWTH_BOUND_MB, f"peak RSS {few[3]} MB -> {many[3]} MB"
