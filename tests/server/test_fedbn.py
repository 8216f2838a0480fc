"""FedBN (``strategy.local_batchnorm``) on members that image with different microscopes:
each member's BatchNorm layers stay with it, the coordinator's copy never moves, and the
members score better on their own images than with FedAvg's averaged statistics."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from fractofl.core.config.run_config import from_nested
from fractofl.core.learning.device import seed_everything
from fractofl.core.model.architectures import batchnorm_keys
from fractofl.core.model.checkpoint import load_checkpoint
from fractofl.core.model.factory import model_for
from fractofl.core.trust.registry import ModelRegistry
from fractofl.server.member_evaluation import read_member_evaluations
from tests.conftest import easy_overrides, run_fractofl

pytestmark = pytest.mark.slow

ROUNDS = 4
# Measured on this set (seed 3): members' mean accuracy 0.27 with FedAvg, 0.49 with FedBN
# (seed 4: 0.55 and 0.68). Half the smaller gap is the margin asked for.
MARGIN = 0.06


def _overrides(data: Path, runs: Path, local_batchnorm: bool) -> list[str]:
    fixed = ("federation.rounds=", "train.local_epochs=")
    base = [
        o for o in easy_overrides(data, runs, members=3, per_class=80) if not o.startswith(fixed)
    ]
    return [
        *base,
        "data.synth.instrument_shift=1.0",
        f"federation.rounds={ROUNDS}",
        "train.local_epochs=2",
        f"strategy.local_batchnorm={str(local_batchnorm).lower()}",
        "output.name=run",
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """The same instrument-shift set trained with FedAvg and with FedBN; their workdirs."""
    data = tmp_path_factory.mktemp("shifted") / "data"
    done = {}
    for local_batchnorm in (False, True):
        workdir = tmp_path_factory.mktemp(f"fedbn-{local_batchnorm}")
        result = run_fractofl(
            "simulate", *_overrides(data, workdir / "runs", local_batchnorm), cwd=workdir
        )
        assert result.returncode == 0, result.stderr[-3000:]
        (workdir / "stderr.txt").write_text(result.stderr)
        done[local_batchnorm] = workdir
    return done


def _mean_member_accuracy(workdir: Path) -> float:
    rows = read_member_evaluations(workdir / "runs" / "run" / "member_eval.csv")
    last = [float(row["val_accuracy"]) for row in rows if row["round"] == str(ROUNDS)]
    assert len(last) == 3
    return sum(last) / len(last)


def test_the_coordinators_batchnorm_never_moves_and_the_rest_is_trained(
    runs: dict[bool, Path],
) -> None:
    # Prepare: the coordinator's initial model, as the run builds it
    run_dir = runs[True] / "runs" / "run"
    cfg = from_nested(yaml.safe_load((run_dir / "config.yaml").read_text()))
    seed_everything(cfg.seed)
    initial = model_for(cfg)
    keys = batchnorm_keys(initial)
    start = initial.state_dict()
    registry = ModelRegistry(runs[True] / "registry")
    # Execute
    published = [load_checkpoint(registry.folder(n) / "model.pt") for n in range(1, ROUNDS + 1)]
    # Assert: every round's version holds the initial BatchNorm, and other weights moved
    assert any(key.endswith("running_var") for key in keys)
    for checkpoint in published:
        state = checkpoint.state_dict
        assert all(torch.equal(state[key], start[key]) for key in keys)
        moved = [k for k in state if k not in keys and not torch.equal(state[k], start[k])]
        assert moved
    # ... and the coordinator said what that means for its own scores
    said = (runs[True] / "stderr.txt").read_text()
    assert "strategy.local_batchnorm (FedBN): members keep their own BatchNorm layers" in said


def test_fedbn_beats_fedavg_on_members_own_images_under_instrument_shift(
    runs: dict[bool, Path],
) -> None:
    # Execute
    fedavg, fedbn = _mean_member_accuracy(runs[False]), _mean_member_accuracy(runs[True])
    # Assert
    assert not math.isnan(fedavg) and fedbn - fedavg >= MARGIN, (fedavg, fedbn)
