"""Part federation: round time and bytes on the wire, simulation against a real federation
(Deployment Engine).

The same work (synthetic set, model, seed, members, rounds) runs, one after the other:

  (1) simulation: ``fractofl simulate`` (Flower's Simulation Engine, one process);
  (2) deployment, plain text: ``fractofl coordinator up --insecure``, one ``fractofl
      member join --insecure --cold`` per member (no warm member: every instruction a
      fresh process), ``fractofl coordinator run``;
  (3) as (2) with the warm member (``member join`` without ``--cold``, the default);
  (4) deployment with TLS and member authentication: the consortium CA, the members'
      key pairs, ``member add``, then as (3) without ``--insecure``;
  (5) as (4) with secure aggregation.

Seconds per round are read from each run's ``metrics.csv`` (start-up left out); the
ratios are to (1). The simulation generates the default synthetic set, which the
deployments reuse (``coordinator run`` never generates data). In (2) to (5) the first
member reaches the SuperLink through a byte-counting TCP proxy on loopback
(tests/federation/recording_proxy.py): bytes per member per round are everything it sent
and received during the run (heartbeats and polling included) over the rounds; (5) runs
Flower's SecAgg+ (``privacy.secure_aggregation=true``), whose four stages per round each
reach every member.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from cpu_roles import OTHER, ROLES, CpuByRole
from deployment import (
    Processes,
    RecordingProxy,
    fractofl,
    free_ports,
    member_public_key,
    prepare_pki,
    run_folder_overrides,
)
from fractofl_cli import seconds_per_round
from outcome import PartOutcome, StepFailed
from plan import Plan
from report import markdown_grid

from fractofl.client.supernode import MEMBER_CACHE_DIR
from fractofl.core.model.checkpoint import load_checkpoint
from fractofl.core.synth.dataset import member_dir

WORK = [
    "model.image_size=32",
    "model.args.width=16",
    "train.local_epochs=1",
    "federation.min_train_members=2",
    "federation.min_evaluate_members=2",
]
SIMULATION = "(1) simulation"
# `member join` settings that keep the waits of Flower's own SuperNode and SuperExec
FLOWER_WAITS = ("deployment.member_poll_s=3", "deployment.member_task_poll_s=1")
UNPACKED = "updates.pack_arrays=false"  # the run override that sends arrays one by one
# the run override that has members evaluate each round's model in an exchange of its own
SEPARATE_EVALUATION = "federation.evaluate_with_training=false"
DEPLOYMENTS = {
    "cold": ("(2) deployment, plain text, cold ClientApps (--cold)", False, (), ("--cold",), ()),
    "plain": ("(3) as (2) with the warm member", False, (), (), ()),
    "plain_flower_poll": (
        "(3') as (3), with Flower's own waits (SuperNode 3 s, SuperExec 1 s)",
        False,
        (),
        FLOWER_WAITS,
        (),
    ),
    "tls": ("(4) as (3), TLS + authentication", True, (), (), ()),
    "secagg": ("(5) as (4) + SecAgg+", True, ("privacy.secure_aggregation=true",), (), ()),
    "memory": (
        "(3) as (2), Flower's in-memory store",
        False,
        (),
        (),
        ("deployment.superlink_store=memory",),
    ),
    "plain_separate": (
        f"(2') as (2), members evaluate in an exchange of their own (`{SEPARATE_EVALUATION}`)",
        False,
        (SEPARATE_EVALUATION,),
        (),
        (),
    ),
    "plain_unpacked": (
        "(2') as (2), every array an object of its own (`updates.pack_arrays=false`)",
        False,
        (UNPACKED,),
        (),
        (),
    ),
    "memory_unpacked": (
        "(3') as (3), every array an object of its own",
        False,
        (UNPACKED,),
        (),
        ("deployment.superlink_store=memory",),
    ),
}
"""Name: (label, TLS and authentication, extra run overrides, extra `member join` options,
extra deployment settings of `coordinator up`)."""
FEDERATION_ROWS = (
    "cold",
    "plain",
    "plain_flower_poll",
    "tls",
    "secagg",
)  # this part's; part members runs the rest
NOTE = (
    "s / round excludes start-up (metrics.csv, last round minus round 0); rounds 2-N also "
    "leave out round 1 (last round minus round 1), which pays for first imports and for "
    "preparing the images. In a deployment "
    "every train and evaluate message starts a ClientApp process (Flower's subprocess "
    "isolation): in (2) a fresh Python that imports Flower and torch; from (3) on a thin "
    "launcher that has the member's warm process (Flower, torch and fractofl imported once) "
    "fork a ready child. The ServerApp runs in its own process and pulls replies every "
    "0.2 s; the members' SuperNodes ask for instructions every 0.5 s when idle "
    "(`deployment.member_poll_s`; Flower's own wait is 3 s) and their SuperExecs ask for a "
    "ClientApp to start every 0.1 s (`deployment.member_task_poll_s`; Flower's: 1 s), in "
    "every row but (3'). "
    "Bytes are the first member's, both directions, through a TCP proxy, including "
    "heartbeats. With every member on one machine their ClientApps compete for its cores, "
    "so the deployment rows are an upper bound for members on machines of their own. "
    "SecAgg+ sends four messages per member per training round instead of one (setup, key "
    "shares, masked update, unmasking), each a ClientApp process; its masked update is a "
    "vector of 64-bit integers. 'Final weights vs (1)': every run trains the same members' "
    "folders with the same seed (members seed from what their folder holds, so a simulated "
    "and a deployed member train alike); SecAgg+ differs by its quantisation."
)


@dataclass
class Measured:
    """One configuration's round time and the first member's traffic."""

    label: str
    seconds_per_round: float
    bytes_per_member_round: float | None
    status: str
    run_dir: Path | None = None
    steady_seconds_per_round: float = math.nan
    """Rounds 2 to N only: round 1 also pays for first imports and image preparation."""
    cpu_by_role: dict[str, float] = field(default_factory=dict)
    """CPU seconds of each kind of process over the whole run (start-up included)."""


@dataclass(frozen=True)
class Setting:
    """Where one invocation of the part works, and its size."""

    plan: Plan
    work: Path
    members: int
    rounds: int
    work_overrides: tuple[str, ...] = tuple(WORK)  # the model and training of every run

    @property
    def data(self) -> Path:
        """The synthetic set the simulation makes and the deployments reuse."""
        return self.work / "data"

    def run_overrides(self, name: str) -> list[str]:
        """The overrides of every run: data, outputs, registry, size and WORK."""
        return [
            *run_folder_overrides(self.work, name),
            f"federation.members={self.members}",
            f"federation.rounds={self.rounds}",
            *self.work_overrides,
        ]


def _measured(label: str, run_dir: Path, traffic: float | None, cpu: dict[str, float]) -> Measured:
    """The figures of a run that exited 0."""
    per_round = seconds_per_round(run_dir)
    if per_round is None:
        return Measured(label, math.nan, traffic, f"FAILED: no rounds in {run_dir}/metrics.csv")
    steady = seconds_per_round(run_dir, start_round=1)
    steady_s = math.nan if steady is None else steady
    return Measured(label, per_round, traffic, "ok", run_dir, steady_s, cpu)


def model_difference(first: Path | None, second: Path | None) -> float | None:
    """The largest absolute difference between two runs' final weights (``model.pt``), or
    None when either run has none."""
    if first is None or second is None:
        return None
    a, b = (load_checkpoint(d / "model.pt").state_dict for d in (first, second))
    return max(
        float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point()
    )


def simulation(
    setting: Setting,
    out: PartOutcome,
    name: str = "simulation",
    label: str = SIMULATION,
    extra: tuple[str, ...] = (),
) -> Measured:
    """(1): ``fractofl simulate`` on the same work (``extra``: run overrides of a variant)."""
    command = fractofl("simulate", *setting.run_overrides(name), *extra)
    log = setting.work / "logs" / f"{name}.log"
    sampler = CpuByRole().start()
    try:
        out.run_step(label, command, log, setting.plan.timeout_s, cwd=setting.work)
    finally:
        cpu = sampler.stop()
    return _measured(label, setting.work / "runs" / name, None, cpu)


def deployment(setting: Setting, out: PartOutcome, name: str) -> Measured:
    """(2)-(5): a SuperLink and the members' SuperNodes as processes; member 0 through
    the byte-counting proxy."""
    label, tls, extra, join_options, up_settings = DEPLOYMENTS[name]
    work, timeout_s = setting.work, setting.plan.timeout_s
    # Every port of the run picked together, so none can be picked twice: a member's port
    # chosen after `up` started could be the SuperLink's, not yet bound.
    port, front_port, *member_ports = free_ports(2 + setting.members)
    deployment_args = [
        f"deployment.pki_dir={work / 'pki'}",
        f"deployment.state_dir={work / f'coordinator-{name}'}",
        "deployment.superlink_host=127.0.0.1",
        f"deployment.superlink_port={port}",
        # `up` runs the front too (the front part measures it); members here reach the
        # SuperLink directly, and the front only needs a port of its own
        f"deployment.front_port={front_port}",
    ]
    insecure = [] if tls else ["--insecure"]
    running = Processes()
    sampler = CpuByRole().start()
    try:
        up = fractofl("coordinator", "up", *insecure, *deployment_args, *up_settings)
        running.start(up, work / "logs" / f"{name}-superlink.log", work)
        with RecordingProxy(("127.0.0.1", port)) as proxy:
            for member in range(setting.members):
                folder = work / f"member{member}"
                if tls:
                    add = ["member", "add", str(member_public_key(work, member))]
                    out.run_step(
                        f"{name}: member add org{member}",
                        fractofl(*add, "--name", f"org{member}", *deployment_args),
                        work / "logs" / f"{name}-add{member}.log",
                        timeout_s,
                        cwd=work,
                    )
                # every row prepares its images as the simulation does: no cache from the last
                shutil.rmtree(folder / MEMBER_CACHE_DIR, ignore_errors=True)
                address = proxy.port if member == 0 else port
                # --no-insecure: the plain phase saved --insecure in the member's join.yaml
                join = [
                    "member", "join", *(insecure or ["--no-insecure"]),
                    "--superlink", f"127.0.0.1:{address}",
                    "--data", str(member_dir(setting.data, member)),
                    "--port", str(member_ports[member]),
                    f"deployment.member_dir={folder}",
                    *join_options,
                ]  # fmt: skip
                if tls:
                    join += ["--ca", str(work / "pki" / "ca.crt")]
                log = work / "logs" / f"{name}-member{member}.log"
                running.start(fractofl(*join), log, work)
            overrides = [*setting.run_overrides(name), *extra]
            command = fractofl("coordinator", "run", *deployment_args, *overrides)
            log = work / "logs" / f"{name}-run.log"
            out.run_step(f"{name}: coordinator run", command, log, timeout_s, cwd=work)
            traffic = len(proxy.sent) + proxy.received_bytes
    finally:
        cpu = sampler.stop()
        running.stop_all()
    return _measured(label, work / "runs" / name, traffic / setting.rounds, cpu)


def table(measured: list[Measured]) -> str:
    """Seconds per round and the ratio to the simulation, bytes per member and round."""
    base = measured[0]
    rows = []
    for m in measured:
        difference = model_difference(base.run_dir, m.run_dir) if m is not base else None
        steady = m.steady_seconds_per_round
        rows.append(
            [
                m.label,
                f"{m.seconds_per_round:.2f}",
                f"{m.seconds_per_round / base.seconds_per_round:.2f}x",
                f"{steady:.2f}",
                f"{steady / base.steady_seconds_per_round:.2f}x",
                "" if m.bytes_per_member_round is None else f"{m.bytes_per_member_round / 1e6:.2f}",
                "" if difference is None else f"{difference:.3g}",
                m.status,
            ]
        )
    headers = ["Configuration", "s / round", "vs simulation", "s / round, rounds 2-N"]
    headers += ["vs simulation, rounds 2-N", "MB / member / round"]
    return markdown_grid([*headers, "Final weights vs (1), max abs diff", "Status"], rows)


CPU_NOTE = (
    "CPU seconds per round of each kind of process the run started (user + system, whole "
    "run including start-up, divided by the rounds; `bench/cpu_roles.py`, sampled every "
    "0.5 s from the benchmark's descendants; a warm member includes the ClientApps it "
    "forked; the benchmark's own process, with the byte-counting proxy, is left out)."
)


def cpu_table(measured: list[Measured], rounds: int) -> str:
    """CPU seconds per round of each kind of process, over the whole run (start-up
    included), and all of them together, after :data:`CPU_NOTE`."""
    roles = [role for role, _ in ROLES if any(role in m.cpu_by_role for m in measured)]
    roles += [OTHER] if any(OTHER in m.cpu_by_role for m in measured) else []
    rows = [
        [
            m.label,
            *(f"{m.cpu_by_role.get(role, 0.0) / rounds:.1f}" for role in roles),
            f"{sum(m.cpu_by_role.values()) / rounds:.1f}",
        ]
        for m in measured
        if m.cpu_by_role
    ]
    return CPU_NOTE + "\n\n" + markdown_grid(["Configuration", *roles, "all"], rows)


def run_federation(plan: Plan, shared: dict[str, object]) -> PartOutcome:
    """The simulation, then each deployment, on the same work; one table."""
    out = PartOutcome()
    sizes = plan.federation
    setting = Setting(plan, plan.fresh_dir("federation"), sizes.members, sizes.rounds)
    prepare_pki(setting.work, sizes.members)
    configurations: list[tuple[str, Callable[[], Measured]]] = [
        (SIMULATION, partial(simulation, setting, out)),
        *(
            (DEPLOYMENTS[name][0], partial(deployment, setting, out, name))
            for name in FEDERATION_ROWS
        ),
    ]
    measured = []
    for label, measure in configurations:
        try:
            measured.append(measure())
        except StepFailed:  # recorded with its log; the other configurations still run
            measured.append(Measured(label, math.nan, None, "FAILED (see Failures)"))
    out.tables.append(
        f"Work: {sizes.members} members, {sizes.rounds} rounds of small_cnn (width 16, 32 x 32 "
        "input, 1 local epoch) on the default synthetic set split across the members; all "
        "processes on one machine.\n\n" + table(measured)
    )
    out.tables.append(cpu_table(measured, sizes.rounds))
    out.notes.append(NOTE)
    out.data = {
        m.label: {"seconds_per_round": m.seconds_per_round, "bytes": m.bytes_per_member_round}
        for m in measured
    }
    return out
