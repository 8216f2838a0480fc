"""Round time and bytes on the wire: simulation against a real federation (Deployment Engine).

Usage: ``.venv/bin/python bench/federation.py [--members 3] [--rounds 3] [--work DIR]
[--results FILE]`` (about 8 minutes on 2 CPU cores).

The same work (synthetic set, model, seed, members, rounds) runs, one after the other in
one invocation:

  (1) simulation: ``fractofl simulate`` (Flower's Simulation Engine, one process);
  (2) deployment, plain text: ``fractofl coordinator up --insecure``, one ``fractofl
      member join --insecure`` per member, ``fractofl coordinator run``;
  (3) deployment with TLS and member authentication: ``fractofl ca init|issue``,
      ``member keys``, ``member add``, then as (2) without ``--insecure``;
  (4) as (3) with secure aggregation.

Seconds per round are read from each run's ``metrics.csv`` (``elapsed_s`` of the last
round minus that of round 0, over the rounds), so start-up is left out; the ratios are to
(1). The simulation generates the default synthetic set, which the deployments reuse
(``coordinator run`` never generates data). In (2) and (3) the first member reaches the
SuperLink through a byte-counting TCP proxy on loopback
(tests/federation/recording_proxy.py): bytes per member per round are
everything it sent and received during the run (heartbeats and polling included) over
the rounds; (4) is (3) with Flower's SecAgg+ (``privacy.secure_aggregation=true``), whose
four stages per round each reach every member. The table goes to stdout and into
``bench/RESULTS.md`` (section ``bench-federation``).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from machine import describe_machine
from report import markdown_grid, write_section

from fractofl.core.synth.dataset import member_dir
from fractofl.core.trust.pki import (
    MEMBER_PUBLIC_KEY_FILE,
    create_ca,
    create_member_key_pair,
    issue_server_certificate,
)

REPO = Path(__file__).resolve().parents[1]


def _load(relative: str) -> ModuleType:
    """A helper module of the tests, by path: ``tests`` is not an importable package
    here (an installed distribution ships a top-level ``tests`` of its own)."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


processes = _load("tests/federation/processes.py")
RecordingProxy = _load("tests/federation/recording_proxy.py").RecordingProxy
Processes, fractofl, free_port = processes.Processes, processes.fractofl, processes.free_port

BEGIN = (
    "<!-- bench-federation:begin (written by bench/federation.py; edits inside are overwritten) -->"
)
END = "<!-- bench-federation:end -->"
RUN_TIMEOUT_S = 1800
WORK = [
    "model.image_size=32",
    "model.args.width=16",
    "train.local_epochs=1",
    "federation.min_train_members=2",
    "federation.min_evaluate_members=2",
]


@dataclass
class Measured:
    """One configuration's round time and the first member's traffic."""

    label: str
    seconds_per_round: float
    bytes_per_member_round: float | None
    status: str


def seconds_per_round(run_dir: Path) -> float:
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    rounds = int(rows[-1]["round"])
    return (float(rows[-1]["elapsed_s"]) - float(rows[0]["elapsed_s"])) / rounds


def run_overrides(work: Path, data: Path, name: str, members: int, rounds: int) -> list[str]:
    return [
        f"data.root={data}",
        f"output.root={work / 'runs'}",
        f"output.name={name}",
        f"registry.root={work / 'registry'}",
        f"registry.private_key={work / 'keys' / 'coordinator.key'}",
        f"registry.public_key={work / 'keys' / 'coordinator.pub'}",
        f"federation.members={members}",
        f"federation.rounds={rounds}",
        *WORK,
    ]


def simulation(work: Path, data: Path, members: int, rounds: int) -> Measured:
    overrides = run_overrides(work, data, "simulation", members, rounds)
    result = subprocess.run(
        fractofl("simulate", *overrides), cwd=work, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return Measured("(1) simulation", float("nan"), None, f"failed: {result.stderr[-300:]}")
    return Measured("(1) simulation", seconds_per_round(work / "runs" / "simulation"), None, "ok")


DEPLOYMENTS = {
    "plain": ("(2) deployment, plain text", False, ()),
    "tls": ("(3) deployment, TLS + authentication", True, ()),
    "secagg": ("(4) as (3) + SecAgg+", True, ("privacy.secure_aggregation=true",)),
}
"""Name: (label, TLS and authentication, extra run overrides)."""


def deployment(work: Path, data: Path, members: int, rounds: int, name: str) -> Measured:
    """A SuperLink and ``members`` SuperNodes as processes; member 0 through the proxy."""
    label, tls, extra = DEPLOYMENTS[name]
    port = free_port()
    state = work / f"coordinator-{name}"
    deployment_args = [
        f"deployment.pki_dir={work / 'pki'}",
        f"deployment.state_dir={state}",
        "deployment.superlink_host=127.0.0.1",
        f"deployment.superlink_port={port}",
        # `up` runs the front too (bench/front.py measures it); members here reach the
        # SuperLink directly, and the front only needs a port of its own
        f"deployment.front_port={free_port()}",
    ]
    insecure = [] if tls else ["--insecure"]
    processes = Processes()
    try:
        up = fractofl("coordinator", "up", *insecure, *deployment_args)
        processes.start(up, work / "logs" / f"{name}-superlink.log", work)
        with RecordingProxy(("127.0.0.1", port)) as proxy:
            for member in range(members):
                folder = work / f"member{member}"
                if tls:
                    registered = subprocess.run(
                        fractofl(
                            "member",
                            "add",
                            str(folder / MEMBER_PUBLIC_KEY_FILE),
                            "--name",
                            f"org{member}",
                            *deployment_args,
                        ),
                        cwd=work,
                        capture_output=True,
                        text=True,
                        check=False,
                    )
                    if registered.returncode != 0:
                        return Measured(label, float("nan"), None, registered.stderr[-300:])
                address = proxy.port if member == 0 else port
                join = [
                    "member",
                    "join",
                    *insecure,
                    "--superlink",
                    f"127.0.0.1:{address}",
                    "--data",
                    str(member_dir(data, member)),
                    "--port",
                    str(free_port()),
                    f"deployment.member_dir={folder}",
                ]
                if tls:
                    join += ["--ca", str(work / "pki" / "ca.crt")]
                processes.start(fractofl(*join), work / "logs" / f"{name}-member{member}.log", work)
            overrides = [*run_overrides(work, data, name, members, rounds), *extra]
            result = subprocess.run(
                fractofl("coordinator", "run", *deployment_args, *overrides),
                cwd=work,
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT_S,
                check=False,
            )
            traffic = len(proxy.sent) + proxy.received_bytes
    finally:
        processes.stop_all()
    if result.returncode != 0:
        return Measured(label, float("nan"), None, f"failed: {result.stderr[-300:]}")
    return Measured(label, seconds_per_round(work / "runs" / name), traffic / rounds, "ok")


def prepare(work: Path, members: int) -> Path:
    """The consortium CA and the members' key pairs; where the synthetic set goes (the
    simulation, which runs first, generates it, and the deployments reuse it)."""
    create_ca(work / "pki", "bench consortium CA", days=2)
    issue_server_certificate(work / "pki", ["localhost", "127.0.0.1"], days=2)
    for member in range(members):
        create_member_key_pair(work / f"member{member}")
    return work / "data"


def table(measured: list[Measured]) -> str:
    base = measured[0].seconds_per_round
    rows = [
        [
            m.label,
            f"{m.seconds_per_round:.2f}",
            f"{m.seconds_per_round / base:.2f}x",
            "" if m.bytes_per_member_round is None else f"{m.bytes_per_member_round / 1e6:.2f}",
            m.status,
        ]
        for m in measured
    ]
    headers = ["Configuration", "s / round", "vs simulation", "MB / member / round", "Status"]
    return markdown_grid(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "out" / "federation")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md")
    args = parser.parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    work = (args.work / stamp).resolve()
    work.mkdir(parents=True)
    data = prepare(work, args.members)
    started = time.monotonic()
    measured = [simulation(work, data, args.members, args.rounds)]
    for name in DEPLOYMENTS:
        measured.append(deployment(work, data, args.members, args.rounds, name))
        print(f"{measured[-1].label}: {measured[-1].seconds_per_round:.2f} s/round", flush=True)
    grid = table(measured)
    machine = describe_machine()
    command = shlex.join([".venv/bin/python", "bench/federation.py", *(argv or sys.argv[1:])])
    section = "\n".join(
        [
            BEGIN,
            "## Federation: simulation against the Deployment Engine",
            "",
            f"Command: `{command}` ({datetime.now(UTC):%Y-%m-%d}, "
            f"{time.monotonic() - started:.0f} s; {machine['cpu model']}, "
            f"torch {machine['torch']}, flwr {machine['flwr']}).",
            f"Work: {args.members} members, {args.rounds} rounds of small_cnn (width 16, 32 x 32 "
            "input, 1 local epoch) on the default synthetic set split across the members; all "
            "processes on one machine.",
            "",
            grid,
            "",
            "Notes: s / round excludes start-up (metrics.csv, last round minus round 0). In a "
            "deployment every train and evaluate message starts a ClientApp process (Flower's "
            "subprocess isolation) and the ServerApp runs in its own process; bytes are the "
            "first member's, both directions, through a TCP proxy, including heartbeats. "
            "With every member on one machine their ClientApp processes (each importing torch "
            "and fractofl) compete for its cores, so the deployment rows are an upper bound "
            "for members on machines of their own. SecAgg+ sends four messages per member "
            "per training round instead of one (setup, key shares, masked update, unmasking), "
            "each a ClientApp process; its masked update is a vector of 64-bit integers.",
            END,
        ]
    )
    print(grid)
    write_section(args.results, section, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
