"""Part overhead: a member's cost per message, from its ClientApp process starting to the
first training step: Flower's floor (an empty ClientApp's start-up), a cold ClientApp
(``member join --cold``) and the warm member's forked child behind the stdlib launcher."""

from __future__ import annotations

import json
import sys

from fractofl_cli import fractofl_executable
from outcome import PartOutcome
from plan import PROGRAMS_DIR, Plan
from proc import bench_env
from report import fmt, markdown_grid

REPEATS = 5
NOTE = (
    "Median of {repeats} runs each. Floor: a fresh Python importing Flower's ClientApp runtime "
    "(`flwr.supernode.runtime.run_clientapp`), what any ClientApp process pays. Cold: a fresh "
    "Python importing that, torch and fractofl's ClientApp, reading the run config as Flower "
    "hands it over, preparing the member's images from the on-disk cache, building the model "
    "and taking one training step. Warm: the launcher's start-up (a Python importing what it "
    "imports, the standard library) plus a child forked from a process with the warm member's "
    "imports doing the same work. Flower's message transport (the SuperNode's polling, the "
    "ClientAppIo exchange), the same in all three, is not included."
)


def run_overhead(plan: Plan, shared: dict[str, object]) -> PartOutcome:
    """``programs/message_overhead.py`` on a member of the default synthetic set."""
    out = PartOutcome()
    work = plan.fresh_dir("overhead")
    data = work / "data"
    out.run_step(
        "synth",
        [fractofl_executable(), "synth", str(data), *plan.simulation.data_overrides],
        plan.logs_dir / "overhead-synth.log",
        plan.timeout_s,
        env=bench_env(),
    )
    log = plan.logs_dir / "overhead.log"
    command = [
        sys.executable,
        str(PROGRAMS_DIR / "message_overhead.py"),
        str(data / "members" / "member-00"),
        str(work / "cache"),
        str(REPEATS),
    ]
    out.run_step(
        "message overhead", command, log, plan.timeout_s, cwd=PROGRAMS_DIR, env=bench_env()
    )
    medians = json.loads(log.read_text().strip().splitlines()[-1])
    floor = medians["floor"]
    rows = [
        [label, fmt(medians[key], 2), fmt(medians[key] - floor, 2)]
        for label, key in (
            ("Flower's floor (empty ClientApp start-up)", "floor"),
            ("cold ClientApp (`member join --cold`)", "cold"),
            ("warm member (launcher + forked child)", "warm"),
        )
    ]
    out.tables.append(
        "ClientApp process start to the first training step, small CNN at 64 px on a member "
        "of the default synthetic set (goal: warm within 0.5 s of the floor):\n\n"
        + markdown_grid(["Path", "Seconds", "Above the floor"], rows)
    )
    out.notes.append(NOTE.format(repeats=REPEATS))
    out.data = medians
    return out
