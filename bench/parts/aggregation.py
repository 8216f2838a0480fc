"""Part aggregation: runs ``programs/aggregation.py`` in its own process and turns its
measurements into tables."""

from __future__ import annotations

import json
import sys
from typing import Any, cast

from outcome import PartOutcome
from plan import PROGRAMS_DIR, Plan
from proc import bench_env, run_logged
from report import fmt, markdown_grid, status

SCRIPT = PROGRAMS_DIR / "aggregation.py"
TARGET_RATIO = 2.0
TOP_ENTRIES = 12


def _tables(result: dict[str, Any], malloc_default: dict[str, Any]) -> str:
    times: list[tuple[str, dict[str, Any], str]] = [
        (
            "(1) fractofl: UpdateGuard.aggregate_train (fedavg, compression none), "
            f"updates.retain_freed_mb={result['retain_freed_mb']} (the default)",
            result,
            "guard_fedavg_s",
        ),
        (
            "(2) Flower: FedAvg.aggregate_train on full weights, same process",
            result,
            "flower_fedavg_s",
        ),
        (
            "(3) floor: np.copyto of the same bytes into preallocated buffers",
            result,
            "numpy_copy_s",
        ),
        (
            "(1') as (1) with updates.retain_freed_mb=0 (malloc's defaults; own process, "
            "against its own floor)",
            malloc_default,
            "guard_fedavg_s",
        ),
    ]
    rows = [
        [label, fmt(run[key], 3), f"{run[key] / run['numpy_copy_s']:.1f}x"]
        for label, run, key in times
    ]
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
        f"Aggregating {result['updates']} updates of ResNet-18 size "
        f"({result['parameters_float'] / 1e6:.2f} M float parameters, "
        f"{result['bytes_per_update'] / 1e6:.1f} MB each):\n\n"
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


def _measure(
    plan: Plan, out: PartOutcome, name: str, retain_freed_mb: int | None
) -> dict[str, Any] | None:
    """Run ``aggregation.py`` once in its own process; its JSON result, or None."""
    json_path = plan.work / f"{name}.json"
    json_path.unlink(missing_ok=True)
    command = [
        sys.executable,
        str(SCRIPT),
        f"--updates={plan.strategies.aggregation_updates}",
        f"--repeats={plan.strategies.aggregation_repeats}",
        f"--json={json_path}",
    ]
    if retain_freed_mb is not None:
        command.append(f"--retain-freed-mb={retain_freed_mb}")
    finished = run_logged(command, plan.logs_dir / f"{name}.log", bench_env(), plan.timeout_s)
    ok = finished.returncode == 0 and json_path.is_file()
    out.record(name, finished, ok)
    if not ok:
        out.tables.append(f"{name}: {status(finished, ok)}")
        return None
    return cast(dict[str, Any], json.loads(json_path.read_text()))


def run_aggregation(plan: Plan, shared: dict[str, object]) -> PartOutcome:
    """Time (1) the coordinator path, (2) Flower's FedAvg, (3) a numpy copy, in one
    process with the coordinator's default malloc setting; and (1) once more in a process
    with malloc's defaults, to show what the setting buys."""
    out = PartOutcome()
    result = _measure(plan, out, "aggregation", None)
    malloc_default = _measure(plan, out, "aggregation-malloc-defaults", 0)
    if result is None or malloc_default is None:
        return out
    out.tables.append(_tables(result, malloc_default))
    out.data["default"] = {k: v for k, v in result.items() if k != "samples"}
    out.data["malloc_defaults"] = {
        k: v for k, v in malloc_default.items() if k.endswith("_s") or k.startswith("ratio")
    }
    out.notes.append(
        f"Median of {result['repeats']} repetitions after one untimed warm-up of each "
        "path, all in one process (`bench/programs/aggregation.py`); random float32 deltas "
        "(std 0.01) on a fresh `build_model('resnet18', 4)`; (1) gets encoded deltas "
        "(`encode_update`, compression none) after `configure_train` on a real in-memory "
        "Grid of 10 nodes, (2) gets the same updates as full weights, (3) copies the same "
        "bytes (10 updates) with `np.copyto`. (1') repeats (1) in a second process with "
        "`--retain-freed-mb=0`: without the coordinator's malloc setting every round "
        "faults the pages of its fresh output buffers in again (`server/heap.py`)."
    )
    return out
