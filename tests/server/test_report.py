"""``fractofl report`` on a real finished run: plots, Markdown, and verified versions only."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from fractofl.core.config.taxonomy import DEFAULT_CLASSES
from fractofl.core.trust.registry import ModelRegistry
from tests.conftest import easy_overrides, run_fractofl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(easy_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("report")
    result = run_fractofl(
        "simulate", *easy_overrides(easy_dataset, workdir / "runs"), "output.name=run", cwd=workdir
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_report_renders_curves_and_the_last_version_class_by_class(finished_run: Path) -> None:
    # Execute
    result = run_fractofl("report", "runs/run", cwd=finished_run)
    # Assert: PNGs that are real images, and a summary naming the verified version.
    assert result.returncode == 0, result.stderr[-3000:]
    out = finished_run / "runs" / "run" / "report"
    last = ModelRegistry(finished_run / "registry").versions()[-1]
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs == {
        "metrics_per_round.png",
        f"confusion_{last.name}.png",
        f"per_class_{last.name}.png",
    }
    for name in pngs:
        with Image.open(out / name) as image:
            assert image.size[0] > 300
    text = (out / "report.md").read_text()
    assert f"## Model {last.name}" in text and "signature verified" in text
    for name in DEFAULT_CLASSES:
        assert f"| {name} | " in text
    assert "| 2 | 2 | 0 | 0 | 0 |" in text  # round 2: two members answered, none failed


def test_report_of_an_earlier_version_and_refusal_of_a_tampered_one(finished_run: Path) -> None:
    # Prepare: round 1's version, and a copy of the registry with its weights changed.
    first = ModelRegistry(finished_run / "registry").versions()[0]
    ok = run_fractofl(
        "report", "runs/run", "--version", str(first.version), "--out", "r1", cwd=finished_run
    )
    weights = finished_run / "registry" / first.name / "model.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    # Execute
    refused = run_fractofl(
        "report", "runs/run", "--version", str(first.version), "--out", "r2", cwd=finished_run
    )
    # Assert
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert f"## Model {first.name}" in (finished_run / "r1" / "report.md").read_text()
    assert refused.returncode == 1
    assert "weights changed after signing" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (finished_run / "r2").exists()
