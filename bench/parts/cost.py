"""Part cost: wall time of a federated round, fractofl vs a plain Flower quickstart-style app."""

from __future__ import annotations

import json
import sys
from typing import Any

from fractofl_cli import per_round, run_fractofl
from outcome import PartOutcome
from plan import PROGRAMS_DIR, Plan
from proc import bench_env, run_logged
from report import Row, fmt, markdown_table, ratio, status

from parts.accuracy import DIRICHLET_DATA, dirichlet_overrides

PLAIN_APP = PROGRAMS_DIR / "plain_flower_app.py"


def _plain_times(timings: dict[str, Any]) -> list[float]:
    """Evaluation times of rounds 0..R, or [] when the file is incomplete."""
    times = timings.get("eval_times")
    rounds = timings.get("rounds")
    if not isinstance(times, list) or not isinstance(rounds, int) or len(times) != rounds + 1:
        return []
    return [float(t) for t in times]


def _ratio_cell(numerator: float | None, denominator: float | None) -> str:
    value = ratio(numerator, denominator)
    return "" if value is None else f"{value:.2f}x"


def run_cost(plan: Plan, shared: dict[str, object]) -> PartOutcome:
    """Time ``cost_rounds`` rounds of both apps on the alpha-0.5 set, each in a fresh process.

    fractofl runs first: it also makes the synthetic set if the accuracy part has not.
    """
    out = PartOutcome()
    rounds = plan.simulation.cost_rounds
    fractofl = run_fractofl(
        "simulate",
        [*dirichlet_overrides(plan), f"federation.rounds={rounds}"],
        plan.runs_dir,
        "cost-fractofl",
        plan.logs_dir,
        plan.timeout_s,
    )
    out.record("fractofl simulate", fractofl.finished, fractofl.ok)
    fractofl_s = fractofl.seconds_per_round() if fractofl.ok else None
    fractofl_warm = fractofl.seconds_per_round(start_round=1) if fractofl.ok else None

    timings_path = plan.work / "plain-timings.json"
    timings_path.unlink(missing_ok=True)
    shown = {
        "PLAIN_DATA_ROOT": str(plan.data_dir / DIRICHLET_DATA),
        "PLAIN_ROUNDS": str(rounds),
        "PLAIN_TIMINGS": str(timings_path),
    }
    plain = run_logged(
        [sys.executable, str(PLAIN_APP)],
        plan.logs_dir / "cost-plain.log",
        bench_env(shown),
        plan.timeout_s,
        shown_env=shown,
    )
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    times = _plain_times(timings)
    plain_s, plain_warm = per_round(times), per_round(times[1:])
    plain_ok = plain.returncode == 0 and plain_s is not None
    out.record("plain Flower app", plain, plain_ok)
    accuracies = timings.get("test_accuracy") or [None]

    rows = [
        Row(
            run=f"fractofl, {rounds} rounds",
            accuracy=fmt(fractofl.final_accuracy),
            macro_f1=fmt(fractofl.final_macro_f1),
            per_round=fmt(fractofl_s, 2),
            per_round_warm=fmt(fractofl_warm, 2),
            wall=fmt(fractofl.finished.wall_s, 0),
            status=status(fractofl.finished, fractofl.ok),
        ),
        Row(
            run=f"plain Flower app, {rounds} rounds",
            accuracy=fmt(accuracies[-1]),
            per_round=fmt(plain_s, 2),
            per_round_warm=fmt(plain_warm, 2),
            wall=fmt(plain.wall_s, 0),
            status=status(plain, plain_ok),
        ),
        Row(
            run="ratio fractofl / plain",
            per_round=_ratio_cell(fractofl_s, plain_s),
            per_round_warm=_ratio_cell(fractofl_warm, plain_warm),
            status="ok" if fractofl_s and plain_s else "n/a",
        ),
    ]
    out.tables.append(markdown_table(rows))
    out.data = {
        "rounds": rounds,
        "fractofl_s_per_round": fractofl_s,
        "plain_s_per_round": plain_s,
        "ratio": ratio(fractofl_s, plain_s),
        "fractofl_s_per_round_2plus": fractofl_warm,
        "plain_s_per_round_2plus": plain_warm,
        "ratio_2plus": ratio(fractofl_warm, plain_warm),
        "fractofl_elapsed_s": [row["elapsed_s"] for row in fractofl.rows],
        "plain_eval_times_from_round0": [t - times[0] for t in times] if times else [],
    }
    out.notes.append(
        "'s / round' excludes engine start-up: fractofl (elapsed_s at the last round - "
        "at round 0) / rounds from metrics.csv; plain app the same from time.monotonic() in "
        "its centralized evaluate_fn. Round 1 still pays for the Ray workers' first imports "
        "and image decoding, so 's / round, rounds 2+' (last - round 1) / (rounds - 1) shows "
        "the steady state. Both: 4 members, 1 CPU each, 2 local epochs, batch 32, "
        "SGD 0.05/0.9/5e-4, 64 px, federated + centralized evaluation every round."
    )
    return out
