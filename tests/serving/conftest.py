"""Serving fixtures: a real signed registry version, its artifact, test images and a
running ``fractofl serve local`` subprocess (started once per session)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fractofl.core.config.taxonomy import DEFAULT_CLASSES
from fractofl.core.images.imageio import grayscale_from_array
from fractofl.core.images.preprocessing import Preprocessing
from fractofl.core.learning.training import train
from fractofl.core.model.architectures import build_model, default_preprocessing
from fractofl.core.model.checkpoint import Checkpoint
from fractofl.core.synth.sample import render_sample
from fractofl.core.synth.style import SynthStyle
from fractofl.core.trust.registry import ModelRegistry
from fractofl.core.trust.signing import create_key_pair, load_private_key, load_public_key
from fractofl.serving.package import Artifact, extract_artifact, package_version
from tests.serving.browser import chromium  # noqa: F401  (the browser tests' fixture)
from tests.serving.moto_aws import aws, aws_url  # noqa: F401  (the AWS tests' fixtures)

IMAGE_SIZE = 32
ARCH_ARGS = {"width": 8}
API_KEY = "test-key-0123"
API_KEY_ENV = "FRACTOFL_TEST_API_KEY"
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class PublishedModel:
    """A registry with one signed version, and the key pair that signed it."""

    registry: Path
    private_key: Path
    public_key: Path
    checkpoint: Checkpoint
    version: str

    def overrides(self, registry: Path | None = None) -> list[str]:
        """Hydra overrides that point ``fractofl`` at this registry and key."""
        return [
            f"registry.root={registry or self.registry}",
            f"registry.trusted_public_key={self.public_key}",
        ]


def publish_small_model(root: Path, seed: int = 0) -> PublishedModel:
    """Sign and publish a small_cnn (random weights, BatchNorm statistics perturbed so
    that every layer matters) as version 1 of a new registry under ``root``."""
    torch_seed = np.random.default_rng(seed).integers(1 << 31)
    torch.manual_seed(int(torch_seed))
    model = build_model("small_cnn", num_classes=len(DEFAULT_CLASSES), **ARCH_ARGS)
    for name, tensor in model.state_dict().items():
        if name.endswith(("running_mean", "running_var")):
            tensor.add_(torch.rand_like(tensor) * 0.5)
    return publish_model(root, model)


def publish_trained_model(root: Path, per_class: int = 80, epochs: int = 15) -> PublishedModel:
    """Sign and publish a small_cnn trained for a few seconds on synthetic images (about
    80 % accurate on new ones), for tests that need a class and a heat map that mean
    something."""
    preprocessing = default_preprocessing("small_cnn", IMAGE_SIZE)
    rng, style = np.random.default_rng(0), SynthStyle(image_size=48)
    classes = DEFAULT_CLASSES
    labels = np.tile(np.arange(len(classes)), per_class)
    inputs = torch.stack(
        [
            preprocessing.to_tensor(grayscale_from_array(render_sample(name, style, rng, classes)))
            for name in (classes[k] for k in labels)
        ]
    )
    targets = torch.from_numpy(labels)
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=len(DEFAULT_CLASSES), **ARCH_ARGS)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(epochs):
        order = torch.randperm(len(targets))
        for start in range(0, len(order), 32):
            batch = order[start : start + 32]
            loss = torch.nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return publish_model(root, model.eval())


def publish_model(
    root: Path,
    model: torch.nn.Module,
    preprocessing: Preprocessing | None = None,
    metrics: dict[str, float] | None = None,
) -> PublishedModel:
    """Sign and publish a small_cnn's weights as version 1 of a new registry under ``root``
    (``preprocessing``: the model's own; default the whole-image one; ``metrics``: signed
    with it, default a test accuracy)."""
    private_key, public_key = root / "keys" / "coordinator.key", root / "keys" / "coordinator.pub"
    create_key_pair(private_key, public_key, None)
    checkpoint = Checkpoint(
        architecture="small_cnn",
        arch_args=dict(ARCH_ARGS),
        classes=list(DEFAULT_CLASSES),
        preprocessing=preprocessing or default_preprocessing("small_cnn", IMAGE_SIZE),
        state_dict=model.state_dict(),
        round=1,
        run_id="serving-test",
        metrics=metrics or {"test_accuracy": 0.5},
    )
    registry = ModelRegistry(root / "registry")
    meta = registry.publish(
        checkpoint, config_digest="test", parent=None, key=load_private_key(private_key, None)
    )
    return PublishedModel(registry.root, private_key, public_key, checkpoint, meta.name)


def bright_or_dark(rng: np.random.Generator, label: int, shape: tuple[int, ...]) -> np.ndarray:
    """Noisy gray levels of a bright (label 0, fatigue) or dark (1, ductile) texture."""
    level = 0.7 if label == 0 else 0.3
    return np.clip(rng.normal(level, 0.08, shape), 0, 1).astype(np.float32)


def publish_bright_dark_model(root: Path, tile: int, pixel_size_um: float) -> PublishedModel:
    """Sign and publish a physical-scale small_cnn trained, for a few seconds, to call bright
    tiles fatigue and dark ones ductile (a stand-in for two textures, for tests of maps and
    of what clients send, not of the model)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    network = build_model("small_cnn", num_classes=len(DEFAULT_CLASSES), **ARCH_ARGS)
    physical = Preprocessing(tile, pixel_size_um=pixel_size_um)
    batches = []
    for _ in range(40):
        labels = rng.integers(0, 2, 64)
        tiles = np.stack([bright_or_dark(rng, label, (tile, tile)) for label in labels])
        batches.append((physical.normalise(tiles), torch.tensor(labels)))
    assert train(network, batches, 2, 0.05, 0.9, 0.0, torch.device("cpu")).accuracy > 0.95
    return publish_model(root, network.eval(), physical)


@pytest.fixture(scope="session")
def published(tmp_path_factory: pytest.TempPathFactory) -> PublishedModel:
    """One signed small_cnn version in a session-wide registry."""
    return publish_small_model(tmp_path_factory.mktemp("published"))


def package_published(published: PublishedModel, out: Path) -> Artifact:
    """The SageMaker artifact of the registry's latest version, written into ``out``."""
    registry, trusted = ModelRegistry(published.registry), load_public_key(published.public_key)
    return package_version(registry, "latest", trusted, out)


def extracted_model(published: PublishedModel, out: Path) -> Path:
    """The latest version packaged into ``out`` and extracted to ``out/model``, as SageMaker
    extracts an artifact to /opt/ml/model."""
    return extract_artifact(package_published(published, out).path, out / "model")


@pytest.fixture(scope="session")
def artifact(published: PublishedModel, tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """The version's SageMaker artifact."""
    return package_published(published, tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="session")
def model_dir(artifact: Artifact, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The artifact extracted as SageMaker extracts it to /opt/ml/model (read-only use)."""
    return extract_artifact(artifact.path, tmp_path_factory.mktemp("opt-ml") / "model")


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good and bad request files, by name."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(5)
    style = SynthStyle(image_size=48)
    gray = render_sample("fatigue", style, rng, DEFAULT_CLASSES)
    files: dict[str, Path] = {}

    def save(name: str, image: Image.Image, **options: object) -> None:
        files[name] = root / name
        image.save(files[name], **options)

    save("gray.png", Image.fromarray(gray))
    save("gray.jpg", Image.fromarray(gray), quality=95)
    wide = (gray.astype(np.uint16) * 257) ^ rng.integers(0, 256, gray.shape, dtype=np.uint16)
    save("gray16.tif", Image.fromarray(wide))
    save("gray16.png", Image.fromarray(wide))
    rgba = np.dstack([gray, gray // 2, 255 - gray, np.full_like(gray, 128)])
    save("rgba.png", Image.fromarray(rgba, "RGBA"))
    files["gray.npy"] = root / "gray.npy"
    np.save(files["gray.npy"], gray)
    files["object.npy"] = root / "object.npy"  # would run code if unpickled
    np.save(files["object.npy"], np.array([{"a": 1}], dtype=object), allow_pickle=True)
    files["truncated.jpg"] = root / "truncated.jpg"
    data = files["gray.jpg"].read_bytes()
    files["truncated.jpg"].write_bytes(data[: len(data) // 2])
    files["text.png"] = root / "text.png"
    files["text.png"].write_text("this is not an image\n")
    return files


@dataclass(frozen=True)
class RunningEndpoint:
    """A ``fractofl serve local`` subprocess."""

    url: str
    api_key: str
    log: Path
    process: subprocess.Popen[bytes]


def fractofl_command(*args: str) -> list[str]:
    """The installed ``fractofl`` command line."""
    return [str(Path(sys.executable).with_name("fractofl")), *args]


NO_RATE_LIMIT = "serving.rate_limit_per_minute=0"
"""The session endpoint serves many tests' requests from one address without throttling."""


def start_endpoint(overrides: list[str], workdir: Path, api_key: str | None) -> RunningEndpoint:
    """Start ``fractofl serve local --port 0`` and wait until it answers /ping."""
    env = dict(os.environ)
    env.pop(API_KEY_ENV, None)
    if api_key:
        env[API_KEY_ENV] = api_key
    out, log = workdir / "stdout.txt", workdir / "stderr.txt"
    with out.open("wb") as stdout, log.open("wb") as stderr:
        process = subprocess.Popen(
            fractofl_command(
                "serve", "local", "--port", "0", *overrides, f"serving.api_key_env={API_KEY_ENV}"
            ),
            cwd=workdir,
            stdout=stdout,
            stderr=stderr,
            env=env,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        words = out.read_text().split()
        urls = [w.rstrip(":,") for w in words if w.startswith("http://")]
        if urls:
            with urllib.request.urlopen(f"{urls[0]}/ping", timeout=10) as reply:
                assert reply.status == 200
            return RunningEndpoint(urls[0], api_key or "", log, process)
        if process.poll() is not None:
            raise AssertionError(f"serve local exited {process.returncode}: {log.read_text()}")
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"serve local did not start in {START_TIMEOUT_S} s: {log.read_text()}")


def stop_endpoint(endpoint: RunningEndpoint) -> None:
    """SIGTERM, then wait (kill if it hangs)."""
    endpoint.process.terminate()
    try:
        endpoint.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        endpoint.process.kill()
        endpoint.process.wait()


@pytest.fixture(scope="session")
def endpoint(
    published: PublishedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningEndpoint]:
    """A real local endpoint with an API key, serving the published version."""
    running = start_endpoint(
        [*published.overrides(), NO_RATE_LIMIT], tmp_path_factory.mktemp("endpoint"), API_KEY
    )
    yield running
    stop_endpoint(running)
    assert running.process.returncode == 0, "SIGTERM should stop it cleanly"


def copy_registry(published: PublishedModel, dest: Path) -> Path:
    """A copy of the published registry, to tamper with."""
    return Path(shutil.copytree(published.registry, dest))


def flip_a_byte(path: Path) -> None:
    """Alter one byte in the middle of a file."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
