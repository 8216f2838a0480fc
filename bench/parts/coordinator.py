"""Part coordinator: the coordinator's peak memory for one round of 10, 100 and 1,000
ResNet-18 updates, gathered against streamed (``programs/coordinator_memory.py``, one
process per configuration), and its aggregation time against a memory copy."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from outcome import PartOutcome
from plan import PROGRAMS_DIR, Plan
from proc import bench_env, run_logged
from report import fmt, markdown_grid, status

SCRIPT = PROGRAMS_DIR / "coordinator_memory.py"
TARGET_PEAK_MB = 2048.0  # streamed, at the largest count
MEMORY_SHARE = 0.6  # a gathered round that would need more of the free memory is not run
MODES = ("gathered", "streamed")


def _available_mb() -> float:
    """MemAvailable of this machine, in MiB."""
    for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def _measure(plan: Plan, out: PartOutcome, mode: str, count: int) -> dict[str, Any] | None:
    name = f"coordinator-{mode}-{count}"
    json_path = plan.work / f"{name}.json"
    json_path.unlink(missing_ok=True)
    command = [
        sys.executable,
        str(SCRIPT),
        f"--mode={mode}",
        f"--updates={count}",
        f"--spill-dir={plan.work / 'coordinator-spill'}",
        f"--json={json_path}",
    ]
    finished = run_logged(command, plan.logs_dir / f"{name}.log", bench_env(), plan.timeout_s)
    ok = finished.returncode == 0 and json_path.is_file()
    out.record(name, finished, ok)
    if not ok:
        out.tables.append(f"{name}: {status(finished, ok)}")
        return None
    result: dict[str, Any] = json.loads(json_path.read_text())
    return result


def _row(result: dict[str, Any]) -> list[str]:
    total = result["collect_s"] + result["aggregate_s"]
    return [
        result["mode"],
        str(result["updates"]),
        fmt(result["peak_rss_mb"], 0),
        fmt(result["peak_rss_mb"] - result["rss_before_replies_mb"], 0),
        fmt(result["collect_s"], 2),
        fmt(result["aggregate_s"], 2),
        fmt(result["copy_floor_s"], 2),
        f"{total / result['copy_floor_s']:.1f}x",
    ]


def run_coordinator(plan: Plan, shared: dict[str, object]) -> PartOutcome:
    """Each count of ``plan.strategies.coordinator_updates``, gathered (where it fits in
    memory) and streamed, each in its own process."""
    out = PartOutcome()
    rows: list[list[str]] = []
    skipped: list[str] = []
    results: list[dict[str, Any]] = []
    bytes_per_update = 0
    for count in plan.strategies.coordinator_updates:
        for mode in MODES:
            need_mb = count * bytes_per_update / 2**20
            if mode == "gathered" and need_mb > MEMORY_SHARE * _available_mb():
                skipped.append(
                    f"gathered, {count} updates: not run, it would hold {need_mb / 1024:.0f} GiB "
                    f"of replies (this machine has {_available_mb() / 1024:.0f} GiB available)"
                )
                continue
            result = _measure(plan, out, mode, count)
            if result is None:
                continue
            bytes_per_update = int(result["bytes_per_update"])
            results.append(result)
            rows.append(_row(result))
    if not rows:
        return out
    largest = max(r["updates"] for r in results if r["mode"] == "streamed")
    peak = max(r["peak_rss_mb"] for r in results if r["mode"] == "streamed")
    met = "met" if peak <= TARGET_PEAK_MB else "NOT met"
    out.tables.append(
        f"One round of ResNet-18 updates ({bytes_per_update / 1e6:.1f} MB each, FedAvg, "
        "compression none) through the coordinator's update guard:\n\n"
        + markdown_grid(
            [
                "Mode",
                "Updates",
                "Peak RSS MB",
                "Above baseline MB",
                "Receive s",
                "Aggregate s",
                "Copy floor s",
                "(receive + aggregate) / floor",
            ],
            rows,
        )
        + "".join(f"\n\n{line}" for line in skipped)
        + f"\n\nTarget: streamed peak flat and under {TARGET_PEAK_MB:.0f} MiB at {largest} "
        f"updates: **{met}** ({peak:.0f} MiB)."
    )
    out.data["runs"] = results
    out.notes.append(
        "One process per row (`bench/programs/coordinator_memory.py`), so Peak RSS is that "
        "configuration's `ru_maxrss`; the baseline is the peak before the first reply (torch, "
        "the model, the four distinct encoded updates the replies are copied from, the Grid "
        "of N nodes and its N instructions). Receive: the guard's time per reply summed "
        "(streamed: decode, screen, write to the spill; gathered: nothing, the replies are "
        "only held). Aggregate: `aggregate_train` (streamed: the norm test, then every "
        "update read back from the spill and folded into the mean). Floor: N x the fastest "
        "of five `np.copyto`s of one update's bytes. The spill is on this machine's disk; a "
        "round larger than the page cache reads it back from the disk."
    )
    return out
