"""A real coordinator process killed with SIGKILL in the middle of a round, then resumed.

What is guaranteed (README, "Checkpoints and resume"): with the same seed and
configuration, on CPU, with every member sampled each round, a run that is killed and
resumed ends with bit-for-bit the same final model as an uninterrupted run, and its
metrics file holds every round exactly once with the same values (elapsed times aside).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from fractofl.cli.app_dirs import APP_DIR_PREFIX
from fractofl.core.trust.registry import ModelRegistry
from fractofl.core.trust.signing import load_public_key
from fractofl.server.recorder import RoundRow
from fractofl.server.round_state import STATE_FILE, load_round_state
from tests.conftest import easy_overrides, run_fractofl

pytestmark = pytest.mark.slow

ROUNDS = 4
KILL_AFTER_ROUND = 2  # SIGKILL once round 2 is checkpointed, i.e. during round 3


def _overrides(data: Path, runs: Path, name: str) -> list[str]:
    base = [
        o
        for o in easy_overrides(data, runs)
        if not o.startswith(("federation.rounds=", "train.local_epochs="))
    ]
    return [
        *base,
        f"federation.rounds={ROUNDS}",
        "train.local_epochs=1",
        "strategy=fedadam",  # its moments must survive the crash for the same final model
        f"output.name={name}",
    ]


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _without_times(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k not in RoundRow.clock_columns()} for row in rows]


def _app_dirs(pid: int) -> list[Path]:
    """The Flower app folders that the simulation in process ``pid`` made."""
    return list(Path(tempfile.gettempdir()).glob(f"{APP_DIR_PREFIX}{pid}-*"))


def _kill_during_round(command: list[str], cwd: Path, run_dir: Path) -> tuple[int, int]:
    """Start the coordinator, SIGKILL it once round KILL_AFTER_ROUND is checkpointed;
    return the round its checkpoint holds after the kill, and the killed process's id."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            state = run_dir / STATE_FILE
            if state.is_file() and load_round_state(run_dir).round >= KILL_AFTER_ROUND:
                break
            time.sleep(0.1)
        assert process.poll() is None, "the run ended before it could be killed"
        assert len(_app_dirs(process.pid)) == 1  # which the kill leaves behind
        os.kill(process.pid, signal.SIGKILL)  # the coordinator process itself
        process.wait(timeout=30)
    finally:
        # Then whatever it had started (the simulation engine's workers).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    return load_round_state(run_dir).round, process.pid


def test_sigkill_mid_round_then_resume_matches_an_uninterrupted_run(
    easy_dataset: Path, tmp_path: Path
) -> None:
    # Prepare: an uninterrupted reference run.
    runs = tmp_path / "runs"
    reference = run_fractofl("simulate", *_overrides(easy_dataset, runs, "reference"), cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr[-3000:]
    fractofl = str(Path(sys.executable).with_name("fractofl"))
    crashed = runs / "crashed"

    # Execute: kill the coordinator during a round, then resume it.
    command = [fractofl, "simulate", *_overrides(easy_dataset, runs, "crashed")]
    killed_after, killed_pid = _kill_during_round(command, tmp_path, crashed)
    assert KILL_AFTER_ROUND <= killed_after < ROUNDS
    assert not (crashed / "summary.json").exists()
    resumed = run_fractofl("coordinator", "resume", str(crashed), cwd=tmp_path)

    # Assert: finished, with every round once and the reference run's values.
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"after round {killed_after} of {ROUNDS}" in resumed.stderr
    assert _app_dirs(killed_pid) == []  # the killed run's app folder is removed
    rows = _rows(crashed)
    assert [int(r["round"]) for r in rows] == list(range(ROUNDS + 1))
    assert _without_times(rows) == _without_times(_rows(runs / "reference"))
    elapsed = [float(r["elapsed_s"]) for r in rows]
    assert elapsed == sorted(elapsed)  # the clock continued across the resume
    final = torch.load(crashed / "model.pt", weights_only=True)["state_dict"]
    expected = torch.load(runs / "reference" / "model.pt", weights_only=True)["state_dict"]
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[k], expected[k]) for k in final)
    summary = json.loads((crashed / "summary.json").read_text())
    assert summary["rounds"] == ROUNDS
    # Member and update logs hold each round once (the killed round's lines were dropped).
    for name in ("members.csv", "updates.csv"):
        with open(crashed / name, newline="") as handle:
            counts = [int(line["round"]) for line in csv.DictReader(handle)]
        assert sorted(set(counts)) == list(range(1, ROUNDS + 1))
        assert all(counts.count(r) == 2 for r in range(1, ROUNDS + 1)), (name, counts)
    # The registry holds one verified version per round of the run, chained by parent.
    registry = ModelRegistry(tmp_path / "registry")
    trusted = load_public_key(tmp_path / "keys" / "coordinator.pub")
    run_id = summary["run_id"]
    versions = [m for m in registry.versions() if m.run_id == run_id]
    assert [m.round for m in versions] == list(range(1, ROUNDS + 1))
    assert [m.parent for m in versions] == [None, *[m.version for m in versions[:-1]]]
    for meta in versions:
        registry.verify(meta.version, trusted)
