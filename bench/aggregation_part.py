"""Part (d) of the strategies benchmark: runs ``aggregation.py`` in its own process and
turns its measurements into tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from outcome import PartOutcome
from proc import bench_env, run_logged
from report import fmt, markdown_grid, status
from strategy_plan import StrategyPlan

SCRIPT = Path(__file__).with_name("aggregation.py")
TARGET_RATIO = 2.0
TOP_ENTRIES = 12


def _tables(result: dict[str, Any]) -> str:
    times = [
        ["(1) fractofl: UpdateGuard.aggregate_train (fedavg, compression none)", "guard_fedavg_s"],
        ["(2) Flower: FedAvg.aggregate_train on full weights", "flower_fedavg_s"],
        ["(3) floor: np.copyto of the same bytes into preallocated buffers", "numpy_copy_s"],
    ]
    floor = result["numpy_copy_s"]
    rows = [[label, fmt(result[key], 3), f"{result[key] / floor:.1f}x"] for label, key in times]
    met = "met" if result["ratio_guard_to_copy"] <= TARGET_RATIO else "NOT met"
    profile_rows = [
        [entry["what"], str(entry["calls"]), fmt(entry["cumtime_s"], 3)]
        for entry in result["profile_categories"]
    ]
    top_rows = [
        [
            entry["function"],
            str(entry["calls"]),
            fmt(entry["tottime_s"], 3),
            fmt(entry["cumtime_s"], 3),
        ]
        for entry in result["profile_guard_fedavg"][1 : TOP_ENTRIES + 1]
    ]
    return (
        f"### (d) Aggregating {result['updates']} updates of ResNet-18 size "
        f"({result['parameters_float'] / 1e6:.2f} M float parameters, "
        f"{result['bytes_per_update'] / 1e6:.1f} MB each)\n\n"
        + markdown_grid(["Path", "Median s", "x floor"], rows)
        + f"\n\nTarget (1) within {TARGET_RATIO:g}x of the floor: **{met}** "
        f"({result['ratio_guard_to_copy']:.1f}x; Flower alone "
        f"{result['ratio_flower_to_copy']:.1f}x; copy at {result['copy_gb_per_s']:.1f} GB/s)."
        "\n\nWhere (1) spends its time (one cProfile run; cumulative times nest, and "
        "profiling inflates them):\n\n"
        + markdown_grid(["Function", "Calls", "Cumulative s"], profile_rows)
        + f"\n\nTop {TOP_ENTRIES} cProfile entries of (1) by cumulative time:\n\n"
        + markdown_grid(["Function", "Calls", "Own s", "Cumulative s"], top_rows)
    )


def run_aggregation(plan: StrategyPlan, shared: dict[str, object]) -> PartOutcome:
    """Time (1) the coordinator path, (2) Flower's FedAvg, (3) a numpy copy, in one process."""
    out = PartOutcome()
    json_path = plan.work / "aggregation.json"
    json_path.unlink(missing_ok=True)
    command = [
        sys.executable,
        str(SCRIPT),
        f"--updates={plan.aggregation_updates}",
        f"--repeats={plan.aggregation_repeats}",
        f"--json={json_path}",
    ]
    finished = run_logged(command, plan.logs_dir / "aggregation.log", bench_env(), plan.timeout_s)
    ok = finished.returncode == 0 and json_path.is_file()
    out.record("(d) aggregation time", finished, ok)
    print(f"    (d) aggregation: exit {finished.returncode} in {finished.wall_s:.0f} s")
    if not ok:
        out.tables.append(f"### (d) Aggregation time\n\n{status(finished, ok)}")
        return out
    result = json.loads(json_path.read_text())
    out.tables.append(_tables(result))
    out.data["d"] = {k: v for k, v in result.items() if k != "samples"}
    out.notes.append(
        f"(d) median of {result['repeats']} repetitions after one untimed warm-up of each "
        "path, all in one process (`bench/aggregation.py`); random float32 deltas "
        "(std 0.01) on a fresh `build_model('resnet18', 4)`; (1) gets encoded deltas "
        "(`encode_update`, compression none) after `configure_train` on a real in-memory "
        "Grid of 10 nodes, (2) gets the same updates as full weights, (3) copies the same "
        "bytes (10 updates) with `np.copyto`."
    )
    return out
