"""Per-message overhead on the member's side: from the ClientApp process starting to the
first training step, (1) Flower's floor (a process that imports Flower's ClientApp runtime
and nothing else: an empty ClientApp's start-up), (2) cold (a fresh process importing
Flower's runtime, torch and fractofl's ClientApp, preparing the member's images from the
cache, building the model and taking one training step), (3) warm (the stdlib launcher's
start-up plus a child forked from a process that has those imports, doing the same work).
Flower's message transport, the same in all three, is not in these figures.

Usage: message_overhead.py MEMBER_FOLDER CACHE REPEATS [OVERRIDES...]; prints JSON.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUN_CONFIG_ENV = "FRACTOFL_BENCH_RUN_CONFIG"  # the run config as Flower hands it over (flat)
FLOOR = "from flwr.supernode.runtime import run_clientapp"
LAUNCHER = "import json, os, socket, stat, sys, time, pathlib"  # warm_launcher's imports
COLD = (
    "import sys; sys.argv = sys.argv[:1] + sys.argv[2:]; "
    "from message_overhead import first_step; first_step()"
)


def _since(started: float, code: str, *args: str) -> float:
    """Seconds from ``started`` until a fresh Python that ran ``code`` exits."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    subprocess.run([sys.executable, "-c", code, *args], check=True, env=env)
    return time.time() - started


def first_step() -> None:
    """What a ClientApp does before its first training step, on this member's folder."""
    import torch

    from fractofl.client import app  # noqa: F401  (the ClientApp module, as Flower loads it)
    from fractofl.core.config.run_config import from_flat
    from fractofl.core.images.labelled import make_loader
    from fractofl.core.learning.member_data import load_member_data
    from fractofl.core.model.factory import augmentation_for, model_for

    folder, cache = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = from_flat(json.loads(os.environ[RUN_CONFIG_ENV]))  # as the ClientApp reads it
    data = load_member_data(folder, cfg, cache)
    model = model_for(cfg)
    samples = data.train.for_training(cfg.train.tiles_per_image)
    images, labels = next(
        iter(make_loader(samples, cfg.train.batch_size, True, augmentation_for(cfg), 0))
    )
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    loss.backward()


def _warm(repeats: int) -> list[float]:
    """Children forked from this process after the warm member's own warm-up."""
    from fractofl.client.warm_member import warm_up

    warm_up()

    times = []
    for _ in range(repeats):
        launcher = _since(time.time(), LAUNCHER)
        started = time.time()
        pid = os.fork()
        if pid == 0:
            try:
                first_step()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        times.append(launcher + time.time() - started)
    return times


def main() -> None:
    from fractofl.cli.config import load_run_config
    from fractofl.core.config.run_config import to_flat

    repeats = int(sys.argv[3])
    os.environ[RUN_CONFIG_ENV] = json.dumps(to_flat(load_run_config(sys.argv[4:])))
    floor = [_since(time.time(), FLOOR) for _ in range(repeats)]
    cold = [_since(time.time(), COLD, "-", *sys.argv[1:]) for _ in range(repeats)]
    warm = _warm(repeats)
    print(
        json.dumps(
            {
                name: statistics.median(v)
                for name, v in (("floor", floor), ("cold", cold), ("warm", warm))
            }
        )
    )


if __name__ == "__main__":
    main()
