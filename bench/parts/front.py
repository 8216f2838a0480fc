"""Part front: round time through the coordinator's front (nginx) against direct to the
SuperLink.

One coordinator (``fractofl coordinator up``: the SuperLink on its private port, the front
on the public one, TLS and member authentication) and the plan's registered members.
Then, the plan's ``repeats`` times and alternating so that a drift of the machine's load
hits both alike, the same run (``fractofl coordinator run``, ResNet-18 at 32 x 32 so that every
update crosses in 5 MiB pieces) with the members' SuperNodes joined

  direct: to the SuperLink's private port (what members would do without the front);
  front:  to the front's port (the default).

Seconds per round are read from each run's ``metrics.csv`` (last round minus round 0,
over the rounds: start-up is left out). Bytes through the front are the sums of
``$request_length`` and ``$bytes_sent`` over the front's access-log lines written during
each front run (polling and heartbeats included), per member and round. Because a
round's noise is larger than the front's cost, ``front_pieces.py`` also times what the
front adds to one request, small and 5 MiB (the plan's ``samples`` POSTs per path,
interleaved), and the report adds that up over a member's requests and bytes in a round.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from deployment import (
    Processes,
    fractofl,
    free_port,
    free_ports,
    member_public_key,
    prepare_pki,
    run_folder_overrides,
)
from fractofl_cli import seconds_per_round
from outcome import PartOutcome
from plan import Plan
from report import markdown_grid

from fractofl.core.config.run_config import DeploymentConfig
from fractofl.core.synth.dataset import member_dir
from fractofl.server.front import FrontFiles
from fractofl.server.superlink import CoordinatorFiles, node_statuses
from parts.front_pieces import PIECE_BYTES, RequestTimes, time_requests

ONLINE_TIMEOUT_S = 180
PER_CLASS, TEST_PER_CLASS = 60, 20
WORK = [
    "model=resnet18",
    "model.image_size=32",
    "train.local_epochs=1",
]
MODES = ("direct", "front")


@dataclass
class Measured:
    """One run: its mode, seconds per round and (front) bytes and requests per member per
    round."""

    mode: str
    seconds_per_round: float
    bytes_per_member_round: float | None = None
    requests_per_member_round: float | None = None


@dataclass(frozen=True)
class Bench:
    """One invocation of the part: its folder, size, ports and time limit."""

    work: Path
    members: int
    rounds: int
    front_port: int
    superlink_port: int
    timeout_s: float

    @property
    def deployment(self) -> list[str]:
        """The ``deployment.*`` overrides of every coordinator and member command."""
        return [
            f"deployment.pki_dir={self.work / 'pki'}",
            f"deployment.state_dir={self.work / 'coordinator'}",
            f"deployment.front_port={self.front_port}",
            f"deployment.superlink_port={self.superlink_port}",
        ]

    @property
    def files(self) -> CoordinatorFiles:
        """The coordinator's state files (for the members' online status)."""
        return CoordinatorFiles.from_config(
            DeploymentConfig(
                pki_dir=str(self.work / "pki"), state_dir=str(self.work / "coordinator")
            )
        )

    def overrides(self, name: str) -> list[str]:
        """The overrides of run ``name``."""
        return [
            *self.deployment,
            *run_folder_overrides(self.work, name),
            f"federation.members={self.members}",
            f"federation.min_train_members={self.members}",
            f"federation.min_evaluate_members={self.members}",
            f"federation.rounds={self.rounds}",
            *WORK,
        ]


def prepare(bench: Bench, out: PartOutcome) -> None:
    """CA, SuperLink certificate, members' key pairs, the synthetic set."""
    prepare_pki(bench.work, bench.members)
    synth = fractofl(
        "synth", str(bench.work / "data"), "--members", str(bench.members),
        "--per-class", str(PER_CLASS), "--test-per-class", str(TEST_PER_CLASS),
        "--iid", "+data.synth.style.image_size=32",
    )  # fmt: skip
    out.run_step("synth", synth, bench.work / "logs" / "synth.log", bench.timeout_s, bench.work)


def wait_nodes(bench: Bench, online: int) -> None:
    """Wait until ``online`` nodes are online. Before members join, wait for none: a
    SuperNode stopped without saying goodbye stays online until its heartbeat expires, and
    the SuperLink refuses to activate its key again until then (the SuperNode exits)."""
    deadline = time.monotonic() + ONLINE_TIMEOUT_S
    while sum(s == "online" for s in node_statuses(bench.files).values()) != online:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"not {online} members online after {ONLINE_TIMEOUT_S} s; see the members' "
                f"logs in {bench.work / 'logs'}"
            )
        time.sleep(1)


def measure(bench: Bench, out: PartOutcome, mode: str, repeat: int) -> Measured:
    """Join the members to ``mode``'s port, run, leave; the run's figures."""
    port = bench.front_port if mode == "front" else bench.superlink_port
    access_log = FrontFiles.of(bench.files).access_log
    members = Processes()
    wait_nodes(bench, 0)
    try:
        for member in range(bench.members):
            join = fractofl(
                "member", "join", "--superlink", f"127.0.0.1:{port}",
                "--data", str(member_dir(bench.work / "data", member)),
                "--port", str(free_port()),
                f"deployment.member_dir={bench.work / f'member{member}'}",
                "--ca", str(bench.work / "pki" / "ca.crt"),
            )  # fmt: skip
            log = bench.work / "logs" / f"{mode}{repeat}-member{member}.log"
            members.start(join, log, bench.work)
        wait_nodes(bench, bench.members)
        offset = access_log.stat().st_size
        name = f"{mode}{repeat}"
        run = fractofl("coordinator", "run", *bench.overrides(name))
        log = bench.work / "logs" / f"{name}-run.log"
        out.run_step(f"{name}: coordinator run", run, log, bench.timeout_s, bench.work)
        with access_log.open("rb") as handle:
            handle.seek(offset)
            lines = handle.read().decode().splitlines()
    finally:
        members.stop_all()
    per_round = seconds_per_round(bench.work / "runs" / name)
    if per_round is None:
        raise RuntimeError(f"run {name} wrote no rounds to {bench.work / 'runs' / name}")
    if mode != "front":
        return Measured(mode, per_round)
    share = bench.members * bench.rounds
    return Measured(mode, per_round, front_bytes(lines) / share, len(lines) / share)


def front_bytes(lines: list[str]) -> int:
    """Request plus response bytes of the front's access-log lines (format ``fleet``:
    ... "REQUEST" status request_length bytes_sent request_time)."""
    total = 0
    for line in lines:
        _, request_length, bytes_sent, _ = line.rsplit('"', 1)[1].split()[-4:]
        total += int(request_length) + int(bytes_sent)
    return total


def table(measured: list[Measured]) -> str:
    direct = statistics.mean(m.seconds_per_round for m in measured if m.mode == "direct")
    rows = []
    for mode in MODES:
        runs = [m for m in measured if m.mode == mode]
        mean = statistics.mean(m.seconds_per_round for m in runs)
        traffic = [m.bytes_per_member_round for m in runs if m.bytes_per_member_round]
        rows.append(
            [
                "members -> front -> SuperLink" if mode == "front" else "members -> SuperLink",
                ", ".join(f"{m.seconds_per_round:.2f}" for m in runs),
                f"{mean:.2f}",
                f"{mean / direct:.3f}x",
                f"{statistics.mean(traffic) / 1e6:.1f}" if traffic else "",
            ]
        )
    headers = ["Path", "s / round (each run)", "mean", "vs direct", "MB / member / round"]
    return markdown_grid(headers, rows)


def request_table(requests: list[RequestTimes], measured: list[Measured]) -> tuple[str, str]:
    """The per-request timings, and what they add up to over a member's round."""
    rows = [
        [
            f"POST of {_size(t.size)} (median of {t.samples})",
            f"{t.direct_s * 1e3:.2f}",
            f"{t.front_s * 1e3:.2f}",
            f"{t.added_s * 1e3:+.2f}",
        ]
        for t in requests
    ]
    grid = markdown_grid(["", "direct, ms", "through the front, ms", "added, ms"], rows)
    small, piece = requests
    fronted = [m for m in measured if m.mode == "front"]
    traffic = statistics.mean(m.bytes_per_member_round or 0 for m in fronted)
    count = statistics.mean(m.requests_per_member_round or 0 for m in fronted)
    direct = statistics.mean(m.seconds_per_round for m in measured if m.mode == "direct")
    per_byte = (piece.added_s - small.added_s) / (piece.size - small.size)
    added = count * small.added_s + traffic * per_byte
    estimate = (
        f"Per round a member makes {count:.0f} requests through the front carrying "
        f"{traffic / 1e6:.0f} MB. At {small.added_s * 1e3:.2f} ms per request plus "
        f"{per_byte * PIECE_BYTES * 1e3:.1f} ms per 5 MiB, paid one after the other, the "
        f"front adds about {added:.2f} s to a round: {added / direct:.1%} of the direct "
        f"round ({direct:.1f} s), i.e. {1 + added / direct:.3f}x."
    )
    return grid, estimate


def _size(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size} B"


NOTE = (
    "s / round excludes start-up (metrics.csv, last round minus round 0). Bytes are "
    "everything the front's access log counts for the run's requests (`$request_length + "
    "$bytes_sent`: the global model down, the update up, evaluation, polling and "
    "heartbeats), divided by members and rounds. A round is mostly ClientApp start-up (each "
    "imports torch) and training, on 2 cores shared with everything else on the machine: "
    "its run-to-run spread (the per-run column) is larger than the front's cost, so the "
    "ratio of means moves by several percent either way between invocations. The "
    "per-request timings isolate the front's own cost (TLS termination, a second TLS hop to "
    "the SuperLink on a kept-alive connection, the body buffered in memory); the estimate "
    "from them is an upper bound, since a member's requests partly overlap."
)


def run_front(plan: Plan, shared: dict[str, object]) -> PartOutcome:
    """One coordinator; the per-request timings; then the runs, alternating direct and front."""
    out = PartOutcome()
    sizes = plan.front
    work = plan.fresh_dir("front")
    front_port, superlink_port = free_ports(2)
    bench = Bench(work, sizes.members, sizes.rounds, front_port, superlink_port, plan.timeout_s)
    prepare(bench, out)
    coordinator = Processes()
    measured: list[Measured] = []
    try:
        coordinator.start(
            fractofl("coordinator", "up", *bench.deployment), work / "logs" / "up.log", work
        )
        for member in range(bench.members):
            add = ["member", "add", str(member_public_key(work, member)), "--name", f"org{member}"]
            log = work / "logs" / f"add{member}.log"
            out.run_step(f"member add org{member}", fractofl(*add, *bench.deployment), log,
                         plan.timeout_s, work)  # fmt: skip
        requests = time_requests(superlink_port, front_port, work / "pki" / "ca.crt", sizes.samples)
        for timed in requests:
            print(f"    {timed.size} B: {timed.direct_s * 1e3:.2f} ms direct, "
                  f"{timed.front_s * 1e3:.2f} ms through the front", flush=True)  # fmt: skip
        for repeat in range(sizes.repeats):
            for mode in MODES if repeat % 2 == 0 else MODES[::-1]:
                measured.append(measure(bench, out, mode, repeat))
                print(f"    {mode} #{repeat}: {measured[-1].seconds_per_round:.2f} s/round",
                      flush=True)  # fmt: skip
    finally:
        coordinator.stop_all()
    request_grid, estimate = request_table(requests, measured)
    out.tables += [
        f"Work: {sizes.members} members, {sizes.rounds} rounds of ResNet-18 (11.2 M "
        f"parameters, 32 x 32 input, 1 local epoch, training and member evaluation) on "
        f"{PER_CLASS} images per class split IID; TLS and member authentication; "
        f"{sizes.repeats} runs per path, alternating; all processes on one machine; nginx "
        "from Debian.\n\n" + table(measured),
        request_grid,
        estimate,
    ]
    out.notes.append(NOTE)
    out.data = {
        "runs": [vars(m) for m in measured],
        "requests": [vars(t) for t in requests],
    }
    return out
