"""Part scale: peak memory of a many-member simulation (process tree and main process)."""

from __future__ import annotations

import shutil

from fractofl_cli import fractofl_executable, read_metrics
from memory import run_sampled
from outcome import PartOutcome
from plan import Plan
from proc import Finished, bench_env
from report import Row, fmt, markdown_table


def run_scale(plan: Plan, shared: dict[str, object]) -> PartOutcome:
    """``fractofl simulate federation.members=N federation.rounds=1`` under a memory sampler."""
    out = PartOutcome()
    members = plan.simulation.scale_members
    name = f"scale-{members}"
    run_dir = plan.runs_dir / name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    command = [
        fractofl_executable(),
        "simulate",
        f"federation.members={members}",
        "federation.rounds=1",
        *plan.simulation.scale_overrides,
        f"data.root={plan.data_dir / name}",
        f"output.root={plan.runs_dir}",
        f"output.name={name}",
    ]
    log_path = plan.logs_dir / f"{name}.log"
    peak = run_sampled(command, bench_env(), log_path, timeout_s=plan.timeout_s)
    finished = Finished(tuple(command), peak.returncode, peak.wall_s, log_path)
    rows = read_metrics(run_dir / "metrics.csv")
    ok = peak.returncode == 0 and (run_dir / "summary.json").is_file()
    answered = int(rows[-1]["members_answered"]) if len(rows) > 1 else 0
    out.record(f"{members} members", finished, ok)
    row = Row(
        run=f"{members} members, 1 round",
        accuracy=fmt(rows[-1]["test_accuracy"]) if rows else "",
        macro_f1=fmt(rows[-1]["test_macro_f1"]) if rows else "",
        peak=f"{peak.peak_tree_gib:.2f} ({peak.peak_main_gib:.2f})",
        wall=fmt(peak.wall_s, 0),
        status=(
            f"completed, {answered}/{members} answered" if ok else f"FAILED: exit {peak.returncode}"
        ),
    )
    out.tables.append(markdown_table([row]))
    out.data = {
        "members": members,
        "completed": ok,
        "members_answered": answered,
        "peak_tree_gib": peak.peak_tree_gib,
        "peak_main_gib": peak.peak_main_gib,
        "peak_processes": peak.peak_processes,
        "samples": peak.samples,
    }
    out.notes.append(
        f"Peak RSS summed over the fractofl process and all its descendants (Ray gcs, "
        f"raylet, workers; up to {peak.peak_processes} processes), sampled every 0.2 s with "
        "psutil; shared pages count once per process, so the tree figure is an upper bound. "
        f"Overrides: {' '.join(plan.simulation.scale_overrides)}."
    )
    return out
