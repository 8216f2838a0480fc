"""Part scale: peak memory of many-member simulations (process tree and main process):
the small CNN with 50 members, and ResNet-18 with as many members as the plan says (the
largest ResNet-18 simulation this machine runs; the coordinator streams the updates)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import Any

from fractofl_cli import fractofl_executable, read_metrics
from memory import run_sampled
from outcome import PartOutcome
from plan import Plan
from proc import Finished, bench_env
from report import Row, fmt, markdown_table


def _run(
    plan: Plan, out: PartOutcome, name: str, members: int, overrides: Sequence[str], label: str
) -> tuple[Row, dict[str, Any]]:
    """One simulation of ``members`` for one round under the memory sampler."""
    run_dir = plan.runs_dir / name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    command = [
        fractofl_executable(),
        "simulate",
        f"federation.members={members}",
        "federation.rounds=1",
        *overrides,
        f"data.root={plan.data_dir / name}",
        f"output.root={plan.runs_dir}",
        f"output.name={name}",
    ]
    log_path = plan.logs_dir / f"{name}.log"
    peak = run_sampled(command, bench_env(), log_path, timeout_s=plan.timeout_s)
    finished = Finished(tuple(command), peak.returncode, peak.wall_s, log_path)
    rows = read_metrics(run_dir / "metrics.csv") if (run_dir / "metrics.csv").is_file() else []
    ok = peak.returncode == 0 and (run_dir / "summary.json").is_file()
    answered = int(rows[-1]["members_answered"]) if len(rows) > 1 else 0
    out.record(label, finished, ok)
    row = Row(
        run=label,
        accuracy=fmt(rows[-1]["test_accuracy"]) if rows else "",
        macro_f1=fmt(rows[-1]["test_macro_f1"]) if rows else "",
        peak=f"{peak.peak_tree_gib:.2f} ({peak.peak_main_gib:.2f})",
        wall=fmt(peak.wall_s, 0),
        status=(
            f"completed, {answered}/{members} answered" if ok else f"FAILED: exit {peak.returncode}"
        ),
    )
    data = {
        "members": members,
        "completed": ok,
        "members_answered": answered,
        "peak_tree_gib": peak.peak_tree_gib,
        "peak_main_gib": peak.peak_main_gib,
        "peak_processes": peak.peak_processes,
        "wall_s": peak.wall_s,
    }
    return row, data


def run_scale(plan: Plan, shared: dict[str, object]) -> PartOutcome:
    """``fractofl simulate federation.members=N federation.rounds=1`` under a memory
    sampler: the small CNN, then ResNet-18."""
    out = PartOutcome()
    sizes = plan.simulation
    small = _run(
        plan,
        out,
        f"scale-{sizes.scale_members}",
        sizes.scale_members,
        sizes.scale_overrides,
        f"{sizes.scale_members} members, small CNN, 1 round",
    )
    resnet = _run(
        plan,
        out,
        f"scale-resnet18-{sizes.resnet_members}",
        sizes.resnet_members,
        resnet_overrides(sizes.resnet_members),
        f"{sizes.resnet_members} members, ResNet-18, 1 round",
    )
    out.tables.append(markdown_table([small[0], resnet[0]]))
    out.data = {"small_cnn": small[1], "resnet18": resnet[1]}
    out.notes.append(
        "Peak GiB: RSS summed over the fractofl process and all its descendants (Ray gcs, "
        "raylet, workers), sampled every 0.2 s with psutil (in brackets: the fractofl "
        "process alone, where the coordinator and its SuperLink state live); shared pages "
        "count once per process, so the tree figure is an upper bound. Small CNN overrides: "
        f"{' '.join(sizes.scale_overrides)}. ResNet-18 overrides: "
        f"{' '.join(resnet_overrides(sizes.resnet_members))} (the default "
        "`updates.aggregation=auto` streams the updates; members evaluate nothing, so the "
        "round is the training round)."
    )
    return out


def resnet_overrides(members: int) -> list[str]:
    """ResNet-18 at 32 px, 4 training images per member (an IID split), one local epoch,
    no member evaluation, and a round timeout long enough for every member on 2 cores."""
    return [
        "model=resnet18",
        "+data.synth.style.image_size=32",
        "model.image_size=32",
        "data.partition=iid",
        f"data.synth.per_class={members}",
        "data.synth.test_per_class=10",
        "data.min_per_member=4",
        "train.local_epochs=1",
        "train.batch_size=4",
        "federation.fraction_evaluate=0.0",
        "federation.min_evaluate_members=0",
        "federation.round_timeout=14400",
    ]
