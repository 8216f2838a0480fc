"""Secure aggregation (Flower's SecAgg+) on the Simulation Engine, against plain FedAvg."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fractofl.core.config.run_config import from_nested
from fractofl.core.learning.member_data import load_member_data
from fractofl.core.model.checkpoint import load_checkpoint
from fractofl.core.synth.dataset import member_dir
from fractofl.strategies.secure_aggregation import secagg_error_bound
from tests.conftest import easy_overrides, run_fractofl

pytestmark = pytest.mark.slow


def test_a_secure_round_equals_fedavg_within_the_quantisation_bound(
    easy_dataset: Path, tmp_path: Path
) -> None:
    # Prepare: one round of the same config, plainly and with SecAgg+
    overrides = [*easy_overrides(easy_dataset, tmp_path / "runs"), "federation.rounds=1"]
    # Execute
    plain = run_fractofl("simulate", *overrides, "output.name=plain", cwd=tmp_path)
    secure = run_fractofl(
        "simulate",
        *overrides,
        "output.name=secure",
        "privacy.secure_aggregation=true",
        cwd=tmp_path,
    )
    # Assert: both finished; every float of the model within the bound; counters not averaged
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert secure.returncode == 0, secure.stderr[-3000:]
    assert "secure aggregation: Flower SecAgg+, 3 shares, threshold 2" in secure.stdout
    runs = tmp_path / "runs"
    cfg = from_nested(yaml.safe_load((runs / "secure" / "config.yaml").read_text()))
    examples = [len(load_member_data(member_dir(easy_dataset, i), cfg).train) for i in range(2)]
    tolerance = secagg_error_bound(cfg.privacy, examples) + 1e-6
    a = load_checkpoint(runs / "secure" / "model.pt").state_dict
    b = load_checkpoint(runs / "plain" / "model.pt").state_dict
    floats = [key for key, value in a.items() if value.is_floating_point()]
    worst = max(float((a[key] - b[key]).abs().max()) for key in floats)
    assert 0 < worst <= tolerance, f"{worst:.3g} vs bound {tolerance:.3g}"
    counters = [key for key in a if key.endswith("num_batches_tracked")]
    assert counters and all(int(a[key]) == 0 for key in counters)
    summary = json.loads((runs / "secure" / "summary.json").read_text())
    assert summary["secure_aggregation"]["protocol"] == "Flower SecAgg+"
