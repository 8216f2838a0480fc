"""Invoking the real ``fractofl`` CLI and reading the run folder it writes."""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proc import Finished, bench_env, run_logged


def fractofl_executable() -> str:
    """The ``fractofl`` script beside this interpreter (the project's venv), else on PATH."""
    beside = Path(sys.executable).parent / "fractofl"
    if beside.is_file():
        return str(beside)
    found = shutil.which("fractofl")
    if found is None:
        raise FileNotFoundError("no `fractofl` executable beside this Python or on PATH")
    return found


@dataclass(frozen=True)
class RunFolderResult:
    """A fractofl run: how the process ended and what its run folder holds."""

    finished: Finished
    run_dir: Path
    rows: list[dict[str, float]]
    summary: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        """The process exited 0 and wrote summary.json."""
        return self.finished.returncode == 0 and self.summary is not None

    @property
    def final_accuracy(self) -> float | None:
        """Final test accuracy from summary.json."""
        return self.summary["final"]["test_accuracy"] if self.summary else None

    @property
    def final_macro_f1(self) -> float | None:
        """Final test macro-F1 from summary.json."""
        return self.summary["final"]["test_macro_f1"] if self.summary else None

    def seconds_per_round(self, start_round: int = 0) -> float | None:
        """(elapsed_s at the last round - at ``start_round``) / rounds after it (metrics.csv).

        ``start_round=1`` leaves out round 1, which pays for the workers' first imports
        and image decoding.
        """
        return per_round(round_ends(self.rows, start_round))


def round_ends(rows: Sequence[dict[str, float]], start_round: int) -> list[float]:
    """When each round from ``start_round`` on ended, in seconds since the run started.

    A row's ``elapsed_s`` is when the round was written down. Where the members scored a
    round's model in the next round's training replies (``federation.
    evaluate_with_training``: the row has ``member_eval_s`` 0), that was after the next
    round's training exchange and the round's own closing scoring: the next round began
    that much earlier, and the first time is moved there. The last row, the run's end,
    is written after the last round's own evaluation exchange either way, and
    :func:`per_round` reads only the first and the last."""
    kept = [row for row in rows if row["round"] >= start_round]
    times = [row["elapsed_s"] for row in kept]
    if len(kept) >= 2 and kept[0].get("member_eval_s") == 0:
        times[0] -= kept[1]["train_s"] + kept[0]["coordinator_eval_s"]
    return times


def per_round(times: Sequence[float]) -> float | None:
    """Mean interval between consecutive round-end times (None with fewer than two)."""
    return (times[-1] - times[0]) / (len(times) - 1) if len(times) >= 2 else None


def seconds_per_round(run_dir: Path, start_round: int = 0) -> float | None:
    """A run folder's seconds per round, start-up left out: ``elapsed_s`` of the last round
    minus that of round ``start_round`` (0: every round) in ``metrics.csv``, over the rounds
    between (None without two such rows)."""
    return per_round(round_ends(read_metrics(run_dir / "metrics.csv"), start_round))


def read_metrics(path: Path) -> list[dict[str, float]]:
    """metrics.csv as a list of rows of floats (empty when the file is missing)."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [
            {k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}
            for row in csv.DictReader(handle)
        ]


def run_fractofl(
    subcommand: str,
    overrides: Sequence[str],
    output_root: Path,
    name: str,
    log_dir: Path,
    timeout_s: float = 3600.0,
) -> RunFolderResult:
    """Run ``fractofl <subcommand> <overrides> output.root=... output.name=<name>``.

    The run folder is removed first, so a stale summary.json can never pass for a result.
    """
    run_dir = output_root / name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    command = [
        fractofl_executable(),
        subcommand,
        *overrides,
        f"output.root={output_root}",
        f"output.name={name}",
    ]
    # Run in the work folder: a setting left at its relative default (registry, signing
    # key) lands there, never in the source tree.
    output_root.mkdir(parents=True, exist_ok=True)
    finished = run_logged(command, log_dir / f"{name}.log", bench_env(), timeout_s, output_root)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    return RunFolderResult(finished, run_dir, read_metrics(run_dir / "metrics.csv"), summary)
