"""One SuperLink, its front and three SuperNodes as separate processes, over TLS with
member authentication, started with the commands the README gives the coordinator and
members."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import yaml
from flwr.cli.build import build_fab_from_disk

from fractofl.cli.config import compose_config, to_run_config
from fractofl.cli.simulation import flower_app_config
from fractofl.client.code_gate import CODE_EVENT, REFUSED_CODE_EVENT
from fractofl.client.policy import POLICY_FILE
from fractofl.core.config.run_config import DeploymentConfig, RunConfig, from_nested
from fractofl.core.learning.device import seed_everything
from fractofl.core.learning.member_data import load_member_data
from fractofl.core.model.checkpoint import load_checkpoint
from fractofl.core.model.factory import model_for
from fractofl.core.processes.flower_executables import flower_env, flower_tool
from fractofl.core.trust.app_bundle import CLIENT_APP, fab_code, fractofl_bundle
from fractofl.core.trust.audit_log import read_log
from fractofl.core.trust.registry import ModelRegistry
from fractofl.core.trust.signing import load_public_key
from fractofl.core.wire.update_protocol import EVALUATION_KEY
from fractofl.server.member_evaluation import MEMBER_EVAL_FILE, read_member_evaluations
from fractofl.server.member_registry import MemberRegistry
from fractofl.server.superlink import CONNECTION, CoordinatorFiles, DeploymentError, flwr_cli
from fractofl.strategies.secure_aggregation import secagg_error_bound
from tests.conftest import run_fractofl, startup_seconds
from tests.federation.conftest import (
    MEMBERS,
    SMALL_RUN,
    Consortium,
    coordinator_test_set,
    member_images,
    wait_for,
)
from tests.federation.processes import Processes, fractofl, free_port, free_ports

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 900
# Members coming online is awaited, never timed: this bound only ends a wait for members
# that are alive yet never register; ``member join`` exiting fails the wait at once.
ONLINE_TIMEOUT_S = 600
ONLINE_POLL_S = 2.0
# A resumed deployed run against the same run never stopped, on the Simulation Engine:
# equal to the bit on one machine's CPU (the README's promise); float32 rounding elsewhere.
RESUME_TOLERANCE = 0.0


@dataclass
class Federation:
    """A running coordinator and its members."""

    workdir: Path
    port: int
    deployment: list[str]
    files: CoordinatorFiles
    superlink_log: Path
    member_groups: list[subprocess.Popen[bytes]]
    member_logs: list[Path]
    processes: Processes
    coordinator: subprocess.Popen[bytes]

    def run_overrides(self, data: Path, name: str, *extra: str) -> list[str]:
        return [
            *self.deployment,
            f"data.root={data}",
            f"output.root={self.workdir / 'runs'}",
            f"output.name={name}",
            f"registry.root={self.workdir / 'registry'}",
            f"registry.private_key={self.workdir / 'keys' / 'coordinator.key'}",
            f"registry.public_key={self.workdir / 'keys' / 'coordinator.pub'}",
            f"federation.members={MEMBERS}",
            *SMALL_RUN,
            *extra,
        ]


def online_members(federation: Federation) -> int:
    """Members online now (0 while a restarted SuperLink cannot answer yet)."""
    try:
        listing = json.loads(
            flwr_cli(federation.files, "supernode", "list", CONNECTION, "--format", "json")
        )
    except (DeploymentError, ValueError):
        return 0
    return sum(node["status"] == "online" for node in listing.get("nodes", []))


def wait_until_online(federation: Federation, count: int, what: str) -> None:
    """Wait until ``count`` members are online; fail at once, with its log, when a
    member's ``member join`` exits, and after ``ONLINE_TIMEOUT_S`` with every log's tail
    (what a loaded CI machine was doing cannot be rerun, only read)."""
    deadline = time.monotonic() + ONLINE_TIMEOUT_S
    while online_members(federation) != count:
        exited = [
            (log, group.returncode)
            for log, group in zip(federation.member_logs, federation.member_groups, strict=True)
            if group.poll() is not None
        ]
        if exited:
            log, code = exited[0]
            raise AssertionError(f"waiting for {what}: {log.name} exited {code}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            logs = [federation.superlink_log, *federation.member_logs]
            tails = "\n".join(f"--- {log.name}\n{_tail(log)}" for log in logs)
            raise AssertionError(
                f"timed out after {ONLINE_TIMEOUT_S:.0f} s waiting for {what}\n{tails}"
            )
        time.sleep(ONLINE_POLL_S)  # each poll is a `flwr` process: spare the loaded machine


def _tail(log: Path, chars: int = 2500) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def training_now(member: subprocess.Popen[bytes]) -> bool:
    """Whether the member's SuperNode has started a ClientApp (it pulled an instruction
    and has not replied yet: a ClientApp takes seconds to import torch)."""
    try:
        children = psutil.Process(member.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return False
    return any("flwr-clientapp" in " ".join(_cmdline(child)) for child in children)


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


@pytest.fixture(scope="module")
def federation(
    consortium: Consortium, member_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Federation]:
    """`coordinator up`, `member add` x 3, `member join` x 3 (TLS, authenticated), the
    members through the front."""
    workdir = tmp_path_factory.mktemp("federation")
    port, superlink_port = free_ports(2)  # members connect to the front's port
    deployment = [
        f"deployment.pki_dir={consortium.pki}",
        f"deployment.state_dir={workdir / 'coordinator'}",
        f"deployment.front_port={port}",
        f"deployment.superlink_port={superlink_port}",
    ]
    processes = Processes()
    try:
        superlink_log = workdir / "logs" / "superlink.log"
        coordinator = processes.start(
            fractofl("coordinator", "up", *deployment), superlink_log, workdir
        )
        files = CoordinatorFiles.from_config(
            DeploymentConfig(pki_dir=str(consortium.pki), state_dir=str(workdir / "coordinator"))
        )
        federation = Federation(
            workdir, port, deployment, files, superlink_log, [], [], processes, coordinator
        )
        # members join the front, which `coordinator up` starts after the SuperLink
        wait_for(lambda: "Ctrl-C stops it" in superlink_log.read_text(), 300, "coordinator up")
        for index, member in enumerate(consortium.members):
            added = subprocess.run(
                fractofl(
                    "member",
                    "add",
                    str(consortium.public_key(member)),
                    "--name",
                    f"org{index}",
                    *deployment,
                ),
                cwd=workdir,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert added.returncode == 0, added.stderr
            assert f"registered org{index}: node id" in added.stdout
        # the last member joins with a policy that sets no rule yet (tests set rules in it)
        policy_of(consortium.members[-1]).write_text(NO_RULES)
        for index in range(len(consortium.members)):
            log = workdir / "logs" / f"member{index}.log"
            federation.member_logs.append(log)
            federation.member_groups.append(join(federation, consortium, member_data, index, log))
        wait_until_online(federation, MEMBERS, "3 members online")
        yield federation
    finally:
        processes.stop_all()


def join(
    federation: Federation,
    consortium: Consortium,
    member_data: Path,
    index: int,
    log: Path,
    member_dir: Path | None = None,
) -> subprocess.Popen[bytes]:
    """`fractofl member join` with member ``index``'s images through the front, its output
    in ``log``; ``member_dir``: whose keys and state (default that member's)."""
    return federation.processes.start(
        fractofl(
            "member",
            "join",
            "--superlink",
            f"127.0.0.1:{federation.port}",
            "--data",
            str(member_images(member_data, index)),
            "--port",
            str(free_port()),
            f"deployment.member_dir={member_dir or consortium.members[index]}",
            "--ca",
            str(consortium.ca_cert),
        ),
        log,
        federation.workdir,
    )


NO_RULES = "# set by the tests\n{}\n"
SECAGG_ONLY = "require_secure_aggregation: true\n"


def policy_of(member_dir: Path) -> Path:
    return member_dir / POLICY_FILE


@contextlib.contextmanager
def member_rules(member_dir: Path, rules: str) -> Iterator[None]:
    """The member's policy holds ``rules`` (read at every instruction) for a while."""
    policy_of(member_dir).write_text(rules)
    try:
        yield
    finally:
        policy_of(member_dir).write_text(NO_RULES)


def coordinator_run(
    federation: Federation, data: Path, name: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """``fractofl coordinator run`` of a run called ``name``, to completion."""
    return subprocess.run(
        fractofl("coordinator", "run", *federation.run_overrides(data, name, *extra)),
        cwd=federation.workdir,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def member_lines(run_dir: Path, member: str) -> list[dict[str, str]]:
    """The member's lines of the run's members.csv (one per round and attempt)."""
    with (run_dir / "members.csv").open() as handle:
        return [line for line in csv.DictReader(handle) if line["member"] == member]


def run_config(run_dir: Path) -> RunConfig:
    return from_nested(yaml.safe_load((run_dir / "config.yaml").read_text()))


def published_round(
    federation: Federation, run_dir: Path, server_round: int
) -> dict[str, torch.Tensor]:
    """The verified weights that the run in ``run_dir`` published after ``server_round``."""
    run_id = json.loads((run_dir / "summary.json").read_text())["run_id"]
    registry = ModelRegistry(federation.workdir / "registry")
    trusted = load_public_key(federation.workdir / "keys" / "coordinator.pub")
    for version in registry.version_numbers():
        checkpoint, meta = registry.load_verified(version, trusted)
        if meta.run_id == run_id and meta.round == server_round:
            return checkpoint.state_dict
    raise AssertionError(f"no version of run {run_id} round {server_round} in the registry")


@pytest.fixture(scope="module")
def plain_run(federation: Federation, member_data: Path) -> subprocess.CompletedProcess[str]:
    """A 2-round FedAvg run over TLS; the secure-aggregation test compares with it."""
    return coordinator_run(federation, member_data, "tls-run", "federation.rounds=2")


def test_three_members_train_two_rounds_over_tls(
    federation: Federation, plain_run: subprocess.CompletedProcess[str]
) -> None:
    # Execute (the fixture): `coordinator run` of 2 rounds
    result = plain_run
    # Assert: two rounds, every member answered, a model with its accuracy, signed versions
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_dir = federation.workdir / "runs" / "tls-run"
    rows = read_metrics(run_dir)
    assert [row["round"] for row in rows] == ["0", "1", "2"]
    assert [row["members_answered"] for row in rows[1:]] == ["3", "3"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0.0 <= summary["final"]["test_accuracy"] <= 1.0
    assert "final test accuracy" in result.stdout
    # ... shown round by round as a simulation shows them, and the same closing table
    for row in rows:
        assert f"round {row['round']:>3}/2 | members {row['members_answered']:>2}" in result.stderr
    assert f"federated run finished; run folder {run_dir}" in result.stderr
    registry = ModelRegistry(federation.workdir / "registry")
    trusted = load_public_key(federation.workdir / "keys" / "coordinator.pub")
    assert [registry.verify(n, trusted).round for n in registry.version_numbers()] == [1, 2]
    # ... each naming, signed, the registered members whose updates are in it
    members = tuple(f"org{index}" for index in range(MEMBERS))
    assert [registry.metadata(n).contributors for n in registry.version_numbers()] == [
        members,
        members,
    ]
    log = federation.superlink_log.read_text()
    assert "https://127.0.0.1" in log  # TLS
    # ... and every member's own scores of each round, by its registered name
    evaluations = read_member_evaluations(run_dir / MEMBER_EVAL_FILE)
    assert sorted((row["round"], row["member"]) for row in evaluations) == [
        (server_round, f"org{index}") for server_round in "12" for index in range(MEMBERS)
    ]
    assert all(0 <= float(row["val_accuracy"]) <= 1 for row in evaluations)
    # ... and a warning that holds every round (one member's validation split lacks a
    # class) is said once in the run, not once a round: the run's Context, which Flower
    # keeps between the per-message ClientApps, remembers it (the module's first run)
    said = [log.read_text().count("validation image(s) hold no") for log in federation.member_logs]
    assert sorted(said) == [0] * (MEMBERS - 1) + [1]


def test_an_unregistered_member_is_refused(
    federation: Federation, consortium: Consortium, member_data: Path
) -> None:
    # Execute: the outsider has a key pair and the CA, but was never added
    log = federation.workdir / "logs" / "outsider.log"
    outsider = join(federation, consortium, member_data, 0, log, consortium.outsider)
    # Assert: it exits with Flower's refusal, logged on both sides; nobody else is affected
    outsider.wait(timeout=120)
    assert outsider.returncode != 0
    assert "Failed to activate SuperNode" in log.read_text()
    wait_for(
        lambda: (
            "No SuperNode found with the given public key" in federation.superlink_log.read_text()
        ),
        30,
        "the SuperLink's log line",
    )
    assert online_members(federation) == MEMBERS


def test_secure_aggregation_equals_fedavg_of_the_same_updates(
    federation: Federation,
    consortium: Consortium,
    member_data: Path,
    plain_run: subprocess.CompletedProcess[str],
) -> None:
    # Prepare: round 1 of the plain run; members' training is seeded by the round and what
    # their folder holds, so a run of the same config trains the same updates
    assert plain_run.returncode == 0, plain_run.stdout[-3000:] + plain_run.stderr[-3000:]
    plain = published_round(federation, federation.workdir / "runs" / "tls-run", 1)
    # Execute: the same round with SecAgg+ (members mask, the coordinator unmasks the sum),
    # one member's policy requiring secure aggregation
    with member_rules(consortium.members[-1], SECAGG_ONLY):
        result = coordinator_run(
            federation,
            member_data,
            "secagg-run",
            "federation.rounds=1",
            "privacy.secure_aggregation=true",
        )
    # Assert: all three joined (the one whose policy requires it too); the aggregate equals
    # FedAvg's within the quantisation bound, and moved
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "secure aggregation: Flower SecAgg+, 3 shares, threshold 2" in result.stdout
    run_dir = federation.workdir / "runs" / "secagg-run"
    assert [row["members_answered"] for row in read_metrics(run_dir)[1:]] == ["3"]
    secure = load_checkpoint(run_dir / "model.pt").state_dict
    cfg = run_config(run_dir)
    examples = [
        len(load_member_data(member_images(member_data, i), cfg).train) for i in range(MEMBERS)
    ]
    tolerance = secagg_error_bound(cfg.privacy, examples) + 1e-6  # + float32 rounding
    seed_everything(cfg.seed)
    initial = model_for(cfg).state_dict()  # the coordinator's round-0 model
    floats = [key for key, value in secure.items() if value.is_floating_point()]
    worst = max(float((secure[k] - plain[k]).abs().max()) for k in floats)
    moved = max(float((secure[k] - initial[k]).abs().max()) for k in floats)
    assert worst <= tolerance, f"SecAgg+ differs from FedAvg by {worst:.3g} > {tolerance:.3g}"
    assert moved > 100 * tolerance, "the secure aggregate did not change the model"
    assert all(np.isfinite(secure[k].numpy()).all() for k in floats)


@pytest.fixture(scope="module")
def two_members_out(
    federation: Federation, consortium: Consortium, member_data: Path
) -> subprocess.CompletedProcess[str]:
    """A plain 1-round run that org0 carries alone: org1's warm process has died (its
    SuperNode stays connected) and org2's policy requires secure aggregation (the
    secure-aggregation test above ran with the same policy: org2 joined it)."""
    warm = [
        child
        for child in psutil.Process(federation.member_groups[1].pid).children(recursive=True)
        if "fractofl.client.warm_member" in " ".join(_cmdline(child))
    ]
    assert len(warm) == 1
    warm[0].kill()
    told = "fractofl: the warm member stopped (exit -9)"
    wait_for(lambda: told in federation.member_logs[1].read_text(), 60, "member join saying so")
    with member_rules(consortium.members[-1], SECAGG_ONLY):
        return coordinator_run(
            federation,
            member_data,
            "two-out-run",
            "federation.rounds=1",
            "federation.min_train_members=1",
            "federation.min_evaluate_members=1",
        )


def test_a_member_requiring_secure_aggregation_refuses_a_plain_run(
    federation: Federation,
    consortium: Consortium,
    two_members_out: subprocess.CompletedProcess[str],
) -> None:
    # Execute (the fixture): a plain run while org2's policy requires secure aggregation
    # Assert: the round went on without it; the refusal, with the rule named, is that
    # member's failure in the coordinator's records and in its own audit log
    result = two_members_out
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_dir = federation.workdir / "runs" / "two-out-run"
    assert [row["members_answered"] for row in read_metrics(run_dir)[1:]] == ["1"]
    org2 = member_lines(run_dir, "org2")
    assert {line["status"] for line in org2} == {"refused"}
    assert "member policy require_secure_aggregation" in org2[0]["detail"]
    events = [entry.event for entry in read_log(federation.workdir / "coordinator" / "audit.log")]
    run_id = next(
        e["run_id"] for e in events if e["kind"] == "run-started" and e["run_dir"] == str(run_dir)
    )
    (round_1,) = [e for e in events if e["kind"] == "round" and e["run_id"] == run_id]
    assert list(round_1["answered"]) == ["org0"]
    assert list(round_1["refused"]) == ["org2"] and list(round_1["failed"]) == ["org1"]
    refusals = [
        entry.event
        for entry in read_log(consortium.members[-1] / "audit.log")
        if entry.event["kind"] == "sent" and "member policy" in str(entry.event.get("error"))
    ]
    assert refusals


@pytest.fixture(scope="module")
def restarted_private_run(
    federation: Federation,
    consortium: Consortium,
    member_data: Path,
    two_members_out: subprocess.CompletedProcess[str],
) -> subprocess.CompletedProcess[str]:
    """org1 does what its failed reply told it (Ctrl-C, then `member join` again), and the
    next run, 2 rounds of DP-FedAvg (members clip, the coordinator adds noise, Flower's RDP
    accountant), has all three members again. One run for the two tests that read it."""
    os.killpg(federation.member_groups[1].pid, signal.SIGINT)
    federation.member_groups[1].wait(timeout=60)
    log = federation.workdir / "logs" / "member1-restarted.log"
    federation.member_logs[1] = log
    federation.member_groups[1] = join(federation, consortium, member_data, 1, log)
    wait_for(lambda: "warm member ready" in log.read_text(), 120, "its warm member ready")
    wait_until_online(federation, MEMBERS, "the member back online")
    return coordinator_run(
        federation,
        member_data,
        "restarted-private-run",
        "federation.rounds=2",
        "privacy.dp=true",
        "privacy.noise_multiplier=1.0",
        "privacy.clipping_norm=1.0",
    )


def test_a_member_whose_warm_process_died_answers_how_to_restart_it_and_after_it_the_next_round(
    federation: Federation,
    two_members_out: subprocess.CompletedProcess[str],
    restarted_private_run: subprocess.CompletedProcess[str],
) -> None:
    # Execute (the fixtures): a run while org1's warm process is down; org1 restarted as
    # told; the next run
    # Assert: the round went on without it; its error reply names the cause and the
    # command that restarts it
    assert two_members_out.returncode == 0, two_members_out.stderr[-3000:]
    run_dir = federation.workdir / "runs" / "two-out-run"
    org1 = member_lines(run_dir, "org1")
    assert {line["status"] for line in org1} == {"failed"}
    assert "member's warm process unavailable: the warm member at" in org1[0]["detail"]
    assert "restart `fractofl member join`" in org1[0]["detail"]
    # ... and restarted, it answers the next run's rounds, from images it prepared before
    # (nothing decoded)
    again = restarted_private_run
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    run_dir = federation.workdir / "runs" / "restarted-private-run"
    assert [row["members_answered"] for row in read_metrics(run_dir)[1:]] == ["3", "3"]
    assert {line["status"] for line in member_lines(run_dir, "org1")} == {"answered"}
    log = federation.member_logs[1]
    prepared = [line for line in log.read_text().splitlines() if "image cache" in line]
    assert prepared and all(" 0 decoded" in line for line in prepared), prepared


def test_a_private_run_reports_epsilon_after_every_round(
    federation: Federation, restarted_private_run: subprocess.CompletedProcess[str]
) -> None:
    # Execute (the fixture): DP-FedAvg, 2 rounds, three members
    result = restarted_private_run
    # Assert: epsilon grows round by round (4.73 after one release of z=1 at delta 1e-5)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_dir = federation.workdir / "runs" / "restarted-private-run"
    rows = read_metrics(run_dir)
    epsilons = [float(row["dp_epsilon"]) for row in rows[1:]]
    assert epsilons[0] == pytest.approx(4.73, abs=0.01) and epsilons[1] > epsilons[0]
    assert [row["members_answered"] for row in rows[1:]] == ["3", "3"]
    privacy = json.loads((run_dir / "summary.json").read_text())["privacy"]
    assert privacy["epsilon"] == pytest.approx(epsilons[-1])
    assert privacy["delta"] == 1e-5
    assert f"differential privacy: epsilon {epsilons[-1]:.3f}" in result.stdout


def sidecar_app(federation: Federation, member_data: Path, name: str, marks: Path) -> Path:
    """A Flower app folder for run ``name``: fractofl's, with one line added to its
    ClientApp (it leaves a file in ``marks`` wherever it runs)."""
    cfg = to_run_config(
        compose_config(
            federation.run_overrides(
                member_data, name, "federation.rounds=1", "federation.round_retries=0"
            )
        )
    )
    app_dir = federation.workdir / "apps" / name
    app_dir.mkdir(parents=True)
    pyproject = flower_app_config(cfg).replace(CLIENT_APP, "sidecar:app")
    (app_dir / "pyproject.toml").write_text(pyproject)
    (app_dir / "sidecar.py").write_text(
        "import os, pathlib\n"
        f"pathlib.Path({str(marks)!r}, str(os.getpid())).touch()  # the added line\n"
        "from fractofl.client.app import app as installed\n\n"
        "app = installed\n"
    )
    return app_dir


def flwr_run(federation: Federation, app_dir: Path) -> subprocess.CompletedProcess[str]:
    """``flwr run APP --stream`` on the coordinator's connection, as whoever ships an app
    of their own would start it."""
    return subprocess.run(
        [flower_tool("flwr"), "run", str(app_dir), CONNECTION, "--stream"],
        env=flower_env(federation.files.flwr_home),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def test_a_bundle_with_one_changed_line_is_refused_by_every_member_until_they_approve_it(
    federation: Federation, consortium: Consortium, member_data: Path
) -> None:
    # Prepare: the run's app with one line added to its ClientApp
    marks = federation.workdir / "sidecar-marks"
    marks.mkdir()
    refused_app = sidecar_app(federation, member_data, "sidecar-run", marks)
    digest = fab_code(build_fab_from_disk(refused_app)).digest
    assert digest != fractofl_bundle().digest
    # Execute
    refused = flwr_run(federation, refused_app)
    # Assert: no member ran a line of it; the run stopped, every member's refusal named
    # with the digest; each member's log says how to approve, its audit log keeps it
    output = refused.stdout + refused.stderr
    assert list(marks.iterdir()) == [], "the unapproved code ran"
    assert not (federation.workdir / "runs" / "sidecar-run" / "summary.json").exists()
    assert "NotEnoughMembersError" in output, output[-3000:]
    assert "CodeNotApprovedError: member code gate: run " in output
    assert f"(code digest {digest}: its ClientApp is sidecar:app" in output
    for member_dir, log in zip(consortium.members, federation.member_logs, strict=True):
        assert f"fractofl member approve {digest}" in log.read_text()
        events = [entry.event for entry in read_log(member_dir / "audit.log")]
        assert any(e["kind"] == REFUSED_CODE_EVENT and e["code_digest"] == digest for e in events)
    # Execute: every member approves the digest (with the command a member uses); the same
    # code comes again in a run with other settings
    for member_dir in consortium.members:
        approved = run_fractofl(
            "member",
            "approve",
            digest,
            f"deployment.member_dir={member_dir}",
            cwd=federation.workdir,
        )
        assert approved.returncode == 0, approved.stderr
        assert "this member refused it before: run " in approved.stdout
    ran = flwr_run(federation, sidecar_app(federation, member_data, "sidecar-again", marks))
    # Assert: now it runs on all three, and their audit logs say which code ran
    assert ran.returncode == 0, (ran.stdout + ran.stderr)[-3000:]
    run_dir = federation.workdir / "runs" / "sidecar-again"
    assert [row["members_answered"] for row in read_metrics(run_dir)[1:]] == ["3"]
    assert len(list(marks.iterdir())) >= MEMBERS
    for member_dir in consortium.members:
        events = [entry.event for entry in read_log(member_dir / "audit.log")]
        assert any(e["kind"] == CODE_EVENT and e["code_digest"] == digest for e in events)


def test_members_killed_mid_round_are_counted_once_each_and_the_run_finishes(
    federation: Federation, member_data: Path
) -> None:
    # Prepare: a 2-round run that one member can carry; the round timeout (the wait for the
    # dead) leaves a live member's cold start room on this machine, measured now
    timeout = math.ceil(max(20.0, 5 * startup_seconds()))
    overrides = federation.run_overrides(
        member_data,
        "sigkill-run",
        "federation.rounds=2",
        f"federation.round_timeout={timeout}",
        "federation.min_train_members=1",
        "federation.min_evaluate_members=1",
    )
    run_dir = federation.workdir / "runs" / "sigkill-run"
    run_log = federation.workdir / "logs" / "sigkill-run.log"
    run = federation.processes.start(
        fractofl("coordinator", "run", *overrides), run_log, federation.workdir
    )
    doomed = {1: federation.member_groups[1], 2: federation.member_groups[2]}
    killed: set[int] = set()

    def kill_whoever_trains() -> bool:
        for index, member in doomed.items():
            if index not in killed and training_now(member):
                os.killpg(member.pid, signal.SIGKILL)
                killed.add(index)
        return len(killed) == len(doomed)

    # Execute: two members' machines die in round 1, each while it trains (SuperNode and
    # ClientApp, no goodbye)
    wait_for(kill_whoever_trains, RUN_TIMEOUT_S, "two members training in round 1")
    run.wait(timeout=RUN_TIMEOUT_S)
    # Assert: the run completes with the remaining member
    assert run.returncode == 0, run_log.read_text()[-3000:]
    rows = read_metrics(run_dir)
    assert [row["round"] for row in rows] == ["0", "1", "2"]
    assert [row["members_answered"] for row in rows[1:]] == ["1", "1"]
    assert (run_dir / "model.pt").is_file()
    # ... and every member asked is one line per round and attempt, by its own node id and
    # registered name; the two dead ones failed or straggled in round 1, never as the
    # SuperLink's node
    names = {m.node_id: m.name for m in MemberRegistry(federation.files.state_dir).members()}
    with (run_dir / "members.csv").open() as handle:
        lines = list(csv.DictReader(handle))
    keys = [(line["round"], line["attempt"], line["node_id"]) for line in lines]
    assert len(keys) == len(set(keys))
    assert all(line["member"] == names.get(int(line["node_id"])) for line in lines)
    first = {line["member"]: line["status"] for line in lines if line["round"] == "1"}
    assert first["org0"] == "answered"
    assert {first["org1"], first["org2"]} <= {"failed", "straggler"}, first
    assert all(line["status"] == "answered" for line in lines if line["member"] == "org0")
    log = run_log.read_text()
    assert "member node 1 " not in log


def test_a_deployed_run_resumes_after_the_coordinator_dies_and_ends_as_if_never_stopped(
    federation: Federation, member_data: Path, tmp_path: Path
) -> None:
    # Prepare: one member is left (the others were killed above); a 2-round run on it
    extra = ["federation.rounds=2", "federation.min_train_members=1"]
    extra += ["federation.min_evaluate_members=1"]
    overrides = federation.run_overrides(member_data, "resumed-run", *extra)
    run_dir = federation.workdir / "runs" / "resumed-run"
    run_log = federation.workdir / "logs" / "resumed-run.log"
    run = federation.processes.start(
        fractofl("coordinator", "run", *overrides), run_log, federation.workdir
    )
    wait_for(lambda: (run_dir / "checkpoint.pt").is_file(), RUN_TIMEOUT_S, "round 1's checkpoint")
    # Execute: the coordinator's machine dies during round 2 (SuperLink, front, ServerApp)
    os.killpg(federation.coordinator.pid, signal.SIGKILL)
    federation.coordinator.wait()
    run.wait(timeout=RUN_TIMEOUT_S)
    too_early = run_fractofl("coordinator", "resume", str(run_dir), cwd=federation.workdir)
    federation.coordinator = federation.processes.start(
        fractofl("coordinator", "up", *federation.deployment),
        federation.workdir / "logs" / "up-again.log",
        federation.workdir,
    )
    wait_for(
        lambda: online_members(federation) == 1,
        ONLINE_TIMEOUT_S,
        "the remaining member back online",
    )
    resumed = run_fractofl("coordinator", "resume", str(run_dir), cwd=federation.workdir)
    # ... and the same run, never stopped, on the Simulation Engine with the member's folder
    simulated = run_fractofl(
        "simulate",
        "data=folders",
        f"data.member_dirs=[{member_images(member_data, 0)}]",
        f"data.test_dir={coordinator_test_set(member_data)}",
        f"output.root={tmp_path}",
        "output.name=never-stopped",
        f"registry.root={tmp_path / 'registry'}",
        f"registry.private_key={tmp_path / 'keys' / 'c.key'}",
        f"registry.public_key={tmp_path / 'keys' / 'c.pub'}",
        *SMALL_RUN,
        *extra,
        cwd=tmp_path,
    )
    # Assert: the stopped run named the way to continue; resuming without a coordinator
    # is refused, saying what to do; resumed, every round appears once
    stopped = run_log.read_text()
    assert run.returncode != 0
    assert "the run did not finish: Connection to the SuperLink is unavailable" in stopped
    assert f"fractofl coordinator resume {run_dir}" in stopped
    assert too_early.returncode == 1
    assert "the coordinator is not up" in too_early.stderr
    assert "Traceback" not in too_early.stderr
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "on the Deployment Engine, as it was started" in resumed.stderr
    assert [row["round"] for row in read_metrics(run_dir)] == ["0", "1", "2"]
    # ... and the final model is the never-stopped run's (members seed from their folder,
    # replies are aggregated in content order, the checkpoint restores every random state)
    assert simulated.returncode == 0, simulated.stderr[-3000:]
    final = load_checkpoint(run_dir / "model.pt").state_dict
    reference = load_checkpoint(tmp_path / "never-stopped" / "model.pt").state_dict
    floats = [key for key, value in final.items() if value.is_floating_point()]
    worst = max(float((final[k] - reference[k]).abs().max()) for k in floats)
    assert worst <= RESUME_TOLERANCE, f"resumed run differs by {worst:.3g}"


def test_what_left_each_member_is_in_its_audit_log_and_equals_what_the_coordinator_got(
    federation: Federation, consortium: Consortium, plain_run: subprocess.CompletedProcess[str]
) -> None:
    # Execute (the fixture): the 2-round TLS run; then both audit commands
    assert plain_run.returncode == 0, plain_run.stderr[-3000:]
    trail = run_fractofl("coordinator", "audit", *federation.deployment, cwd=federation.workdir)
    assert trail.returncode == 0, trail.stderr
    assert "hash chain verified" in trail.stdout
    events = [entry.event for entry in read_log(federation.workdir / "coordinator" / "audit.log")]
    # Assert: the coordinator's trail has who asked for the run, its start, both rounds with
    # every member's update hashed, both versions and the end
    run_dir = str(federation.workdir / "runs" / "tls-run")
    started = [e for e in events if e["kind"] == "run-started" and e["run_dir"] == run_dir]
    assert len(started) == 1
    run_id = started[0]["run_id"]
    assert any(
        e["kind"] == "run-requested"
        and e["run_name"] == "tls-run"
        and e["code_digest"] == fractofl_bundle().digest
        for e in events
    )
    rounds = [e for e in events if e["kind"] == "round" and e["run_id"] == run_id]
    assert [e["round"] for e in rounds] == [1, 2]
    assert [e["version"] for e in events if e["kind"] == "published" and e["run_id"] == run_id]
    assert any(
        e["kind"] == "run-ended" and e["run_id"] == run_id and e["outcome"] == "finished"
        for e in events
    )
    received = {
        (update["member"], update["sha256"], update["bytes"])
        for event in rounds
        for update in event["updates"]
    }
    assert {member for member, _, _ in received} == {f"org{i}" for i in range(MEMBERS)}
    evaluations = read_member_evaluations(Path(run_dir) / MEMBER_EVAL_FILE)
    # ... and each member's own log lists exactly those bytes, with the same hashes
    for index, member_dir in enumerate(consortium.members):
        log = member_dir / "audit.log"
        shown = run_fractofl(
            "member", "audit", f"deployment.member_dir={member_dir}", cwd=federation.workdir
        )
        assert shown.returncode == 0, shown.stderr
        sent = [
            entry.event
            for entry in read_log(log)
            if entry.event["kind"] == "sent"
            and entry.event["run_id"] == int(run_id)
            and entry.event["message_type"] == "train"
        ]
        assert len(sent) == 2
        assert {(f"org{index}", e["arrays_sha256"], e["arrays_bytes"]) for e in sent} == {
            item for item in received if item[0] == f"org{index}"
        }
        assert all(e["metrics"]["metrics"]["num-examples"] > 0 for e in sent)
        # ... one exchange a round (federation.evaluate_with_training): round 1's model was
        # scored in round 2's training reply, and only the last one in an evaluation reply
        types = [
            entry.event["message_type"]
            for entry in read_log(log)
            if entry.event["kind"] == "sent" and entry.event["run_id"] == int(run_id)
        ]
        assert sorted(types) == ["evaluate", "train", "train"]
        scored = [e["metrics"][EVALUATION_KEY] for e in sent if EVALUATION_KEY in e["metrics"]]
        (row,) = [r for r in evaluations if r["round"] == "1" and r["member"] == f"org{index}"]
        assert len(scored) == 1
        assert scored[0]["val-accuracy"] == pytest.approx(float(row["val_accuracy"]), abs=1e-6)
    # an edited line of a member's log is found, with its number
    copy = federation.workdir / "edited-audit.log"
    lines = (consortium.members[0] / "audit.log").read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if '"kind": "sent"' in line)
    lines[at] = lines[at].replace('"kind": "sent"', '"kind": "sant"')
    copy.write_text("".join(lines))
    edited = run_fractofl("member", "audit", "--log", str(copy), cwd=federation.workdir)
    assert edited.returncode == 1
    assert f"line {at + 1}: its content does not match its hash" in edited.stderr
