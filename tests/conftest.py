"""Shared fixtures: a small, easy synthetic data set made once per test session."""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
# One math thread per process: xdist runs a worker per core, and each worker's torch and
# the processes its tests start (members, coordinators) would otherwise start a thread per
# core each, more threads than cores (measured on 2 cores: four of the slowest files in
# 326 s, with this in 275 s). Set before torch is imported; a value the caller set wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from fractofl.core.config.run_config import RunConfig
from fractofl.core.config.taxonomy import DEFAULT_CLASSES
from fractofl.core.synth.dataset import SynthSpec, generate_dataset
from fractofl.core.synth.style import SynthStyle

if TYPE_CHECKING:
    from fractofl.core.learning.member_data import MemberData

# Easy settings: no blending, little noise, small images. Models learn these quickly,
# so a short run must beat chance (25 %) by a clear margin.
EASY_STYLE = {"image_size": 48, "mix_fraction": 0.0, "noise": 0.3, "charging_prob": 0.0}


def pytest_configure(config: pytest.Config) -> None:
    """One image cache for the whole session, shared by xdist's workers and every process
    the tests start (they inherit XDG_CACHE_HOME), never the user's own."""
    if hasattr(config, "workerinput"):
        return  # a worker: the controller set it before starting it
    cache = tempfile.mkdtemp(prefix="fractofl-test-cache-")
    os.environ["XDG_CACHE_HOME"] = cache
    config.stash[_CACHE_KEY] = cache


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's image cache."""
    cache = config.stash.get(_CACHE_KEY, None)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)


_CACHE_KEY = pytest.StashKey[str]()

# The slowest test files, slowest first (worker seconds in a fresh clone's `.ci/run` on 2
# cores, 2026-12-07: 492 s for the first, 47 s for the last). Started
# first, so that no long file starts last and leaves the other xdist workers idle at the
# end (longest first is the classic rule for this).
SLOWEST_FIRST = (
    "tests/federation/test_real_federation.py",
    "tests/server/test_byzantine.py",
    "tests/server/test_report.py",
    "tests/federation/test_front.py",
    "tests/server/test_dropouts.py",
    "tests/server/test_fedbn.py",
    "tests/server/test_ray_cluster.py",
    "tests/cli/test_own_folders.py",
    "tests/server/test_resume.py",
    "tests/server/test_secure_simulation.py",
    "tests/cli/test_commands.py",
    "tests/serving/test_web_page.py",
    "tests/server/test_simulation.py",
    "tests/cli/test_federation_cli.py",
    "tests/server/test_flwr_run.py",
    "tests/federation/test_no_images_leave.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the files of :data:`SLOWEST_FIRST` first, in its order; the rest after them, as
    collected (xdist keeps this order: ``--no-loadscope-reorder`` in pyproject.toml)."""
    rank = {path: index for index, path in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


def easy_spec(members: int = 2, per_class: int = 48, seed: int = 3) -> SynthSpec:
    """A small, easy synthetic set."""
    return SynthSpec(
        classes=DEFAULT_CLASSES,
        members=members,
        partition="dirichlet",
        alpha=1.0,
        per_class=per_class,
        test_per_class=24,
        seed=seed,
        min_per_member=8,
        style=SynthStyle(**EASY_STYLE),
    )


def easy_overrides(
    data_root: Path, output_root: Path, members: int = 2, per_class: int = 48
) -> list[str]:
    """Hydra overrides that describe exactly :func:`easy_spec` plus a short, fast run."""
    spec = easy_spec(members=members, per_class=per_class)
    style = [f"+data.synth.style.{k}={v}" for k, v in EASY_STYLE.items()]
    return [
        f"data.root={data_root}",
        f"output.root={output_root}",
        f"federation.members={spec.members}",
        f"data.alpha={spec.alpha}",
        f"data.synth.per_class={spec.per_class}",
        f"data.synth.test_per_class={spec.test_per_class}",
        f"data.synth.seed={spec.seed}",
        f"data.min_per_member={spec.min_per_member}",
        *style,
        "model.image_size=32",
        "model.args.width=16",
        "federation.rounds=2",
        # One Ray worker for all simulated members: a second one would start its own
        # Python, torch and copy of the members' data (about 8 CPU s a run) while the
        # other xdist worker needs the core. Results do not depend on it (test_ray_cluster).
        "federation.local_cpus=1",
        "train.local_epochs=3",
        "train.batch_size=16",
    ]


def easy_member_zero(easy_dataset: Path, **train: Any) -> tuple[RunConfig, MemberData]:
    """The run config (32-px images, ``train`` settings changed) and member 0's data of the
    easy set, loaded as its ClientApp loads them."""
    from fractofl.core.learning.member_data import load_member_data
    from fractofl.core.synth.dataset import member_dir

    cfg = RunConfig()
    cfg.data.root = str(easy_dataset)
    cfg.model.image_size = 32
    cfg.train = dataclasses.replace(cfg.train, **train)
    return cfg, load_member_data(member_dir(easy_dataset, 0), cfg, easy_dataset / "cache")


@pytest.fixture(scope="session")
def easy_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An easy synthetic set for 2 members under a session-wide temporary folder."""
    root = tmp_path_factory.mktemp("easy") / "data"
    generate_dataset(root, easy_spec())
    return root


FIVE_MEMBERS_PER_CLASS = 80


@pytest.fixture(scope="session")
def easy_dataset_5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The easy synthetic set split across 5 members."""
    root = tmp_path_factory.mktemp("easy5") / "data"
    generate_dataset(root, easy_spec(members=5, per_class=FIVE_MEMBERS_PER_CLASS))
    return root


def fresh_python(code: str) -> list[str]:
    """Run ``code`` in a fresh Python process of this environment; the lines it printed
    (what a new member or coordinator process would have imported, for example)."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split()


@functools.cache
def startup_seconds() -> float:
    """How long a fresh member process takes to import what it runs, measured now: tests
    that bound a wait scale it from this, so a loaded machine does not fail them."""
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", "import fractofl.client.app, fractofl.server.app"],
        check=True,
        capture_output=True,
    )
    return time.monotonic() - started


def run_fractofl(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the installed ``fractofl`` command as a user would, capturing its output."""
    command = [str(Path(sys.executable).with_name("fractofl")), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
