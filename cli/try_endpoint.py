"""The last step of the main job: serve the run's final version on a local endpoint and
query it over HTTP with a few coordinator test images, as a member would."""

from __future__ import annotations

import dataclasses
import json
import tempfile
import threading
from pathlib import Path

from fractofl.core.config.run_config import RunConfig
from fractofl.core.trust.registry import ModelRegistry
from fractofl.core.trust.signing import load_public_key
from fractofl.serving.client import EndpointClient
from fractofl.serving.local_endpoint import EndpointSettings
from fractofl.serving.serve_local import start_local_endpoint

IMAGES_PER_CLASS = 2


def sample_images(test_dir: Path, classes: list[str]) -> list[tuple[str, Path]]:
    """The first images of each class folder: (true class, path)."""
    picked = []
    for name in classes:
        files = sorted(p for p in (test_dir / name).iterdir() if p.is_file())
        picked += [(name, path) for path in files[:IMAGES_PER_CLASS]]
    return picked


def query_local_endpoint(cfg: RunConfig, run_dir: Path, test_dir: Path) -> int:
    """Serve the run's last version on a free loopback port, classify sample images over
    HTTP, print a table; 0 when every request was answered."""
    run_id = json.loads((run_dir / "summary.json").read_text())["run_id"]
    registry = ModelRegistry(Path(cfg.registry.root))
    version = registry.latest(run_id)
    trusted = load_public_key(Path(cfg.registry.trusted_public_key))
    settings = EndpointSettings.from_config(
        dataclasses.replace(cfg.serving, host="127.0.0.1", port=0), None
    )
    with tempfile.TemporaryDirectory(prefix="fractofl-try-") as workdir:
        endpoint = start_local_endpoint(registry, version.version, trusted, settings, Path(workdir))
        server = threading.Thread(target=endpoint.serve_forever, daemon=True)
        server.start()
        try:
            print(f"\nlocal endpoint {endpoint.url} serving {version.name} (signature verified):")
            client = EndpointClient(endpoint.url)
            print(f"{'image':<40} {'true class':<14} {'predicted':<14} {'prob':>5}")
            for truth, path in sample_images(test_dir, list(cfg.data.classes)):
                answer = client.predict(path)
                print(
                    f"{path.parent.name + '/' + path.name:<40} {truth:<14} "
                    f"{answer.label:<14} {answer.probability:>5.2f}"
                )
        finally:
            endpoint.shutdown()
            endpoint.server_close()
    print(
        "\nServe it for members: .venv/bin/fractofl serve local, then open "
        "http://127.0.0.1:8080/ in a browser, or: "
        ".venv/bin/fractofl predict IMAGE --endpoint http://127.0.0.1:8080"
    )
    return 0
