"""The coordinator's front (nginx) on loopback: members reach only the Fleet API.

One coordinator (`coordinator up`: SuperLink on a private port, nginx on the public one)
and two members joined through the front serve the whole module; the tests run in file
order (training, refusals, revocation, restart). Every process runs in a session of its
own and is killed at the end, also when a test fails.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

from fractofl.cli.config import load_run_config
from fractofl.cli.main import main as fractofl_main
from fractofl.cli.simulation import flower_app_config
from fractofl.core.config.run_config import DeploymentConfig, from_nested
from fractofl.core.learning.device import seed_everything
from fractofl.core.model.checkpoint import load_checkpoint
from fractofl.core.model.factory import model_for
from fractofl.core.processes.flower_executables import flower_env, flower_tool
from fractofl.core.trust.registry import ModelRegistry
from fractofl.core.trust.signing import load_public_key
from fractofl.server.front import FrontFiles
from fractofl.server.member_registry import member_statuses
from fractofl.server.superlink import CoordinatorFiles, flwr_json, node_statuses
from tests.federation.conftest import Consortium, member_images, wait_for
from tests.federation.processes import Processes, fractofl, free_port, free_ports

pytestmark = pytest.mark.slow

MEMBERS = 2
RUN_TIMEOUT_S = 900
ONLINE_TIMEOUT_S = 120
RESNET_RUN = [
    "model=resnet18",  # 11.2 M parameters: 45 MB of float32, uploaded in 5 MiB pieces
    "model.image_size=32",
    "train.local_epochs=1",
    f"federation.members={MEMBERS}",
    f"federation.min_train_members={MEMBERS}",
    "federation.fraction_evaluate=0.0",  # training crosses the front; evaluation would again
]
FLOWER_CHUNK = 5 << 20


@dataclass
class FrontedFederation:
    """A coordinator behind its front and the members joined through it."""

    workdir: Path
    consortium: Consortium
    data_root: Path
    front_port: int
    deployment: list[str]
    cfg: DeploymentConfig
    processes: Processes
    coordinator: subprocess.Popen[bytes] | None = None
    members: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def files(self) -> CoordinatorFiles:
        return CoordinatorFiles.from_config(self.cfg)

    @property
    def access_log(self) -> Path:
        return FrontFiles.of(self.files).access_log

    def up(self, log: str) -> None:
        """`fractofl coordinator up`, until it says it is ready."""
        path = self.workdir / "logs" / log
        self.coordinator = self.processes.start(
            fractofl("coordinator", "up", *self.deployment), path, self.workdir
        )
        wait_for(lambda: "Ctrl-C stops it" in path.read_text(), 120, "coordinator up")

    def join(self, name: str, member: Path, data: int) -> subprocess.Popen[bytes]:
        """`fractofl member join` through the front with ``member``'s key and the images
        of synthetic member ``data``."""
        process = self.processes.start(
            fractofl(
                "member",
                "join",
                "--superlink",
                f"127.0.0.1:{self.front_port}",
                "--data",
                str(member_images(self.data_root, data)),
                "--port",
                str(free_port()),
                f"deployment.member_dir={member}",
                "--ca",
                str(self.consortium.ca_cert),
            ),
            self.join_log(name),
            self.workdir,
        )
        self.members[name] = process
        return process

    def join_log(self, name: str) -> Path:
        return self.workdir / "logs" / f"join-{name}.log"

    def statuses(self) -> dict[str, str]:
        return {m.name: status for m, status in member_statuses(self.files, self.cfg)}

    def wait_online(self, *names: str) -> None:
        wait_for(
            lambda: all(self.statuses().get(n) == "online" for n in names),
            ONLINE_TIMEOUT_S,
            f"{', '.join(names)} online",
        )


def cli(*args: str) -> tuple[int, str, str]:
    """Run a short ``fractofl`` command in this process (the same code as the executable,
    without its start-up time); exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = fractofl_main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def fronted(
    consortium: Consortium, member_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FrontedFederation]:
    """`coordinator up` (SuperLink + front), `member add` x 2, `member join` x 2 through
    the front, both online."""
    workdir = tmp_path_factory.mktemp("fronted")
    front_port, superlink_port = free_ports(2)
    deployment = [
        f"deployment.pki_dir={consortium.pki}",
        f"deployment.state_dir={workdir / 'coordinator'}",
        f"deployment.front_port={front_port}",
        f"deployment.superlink_port={superlink_port}",
    ]
    cfg = load_run_config(deployment).deployment
    federation = FrontedFederation(
        workdir, consortium, member_data, front_port, deployment, cfg, Processes()
    )
    try:
        federation.up("up.log")
        for index in range(MEMBERS):
            member = consortium.members[index]
            key = str(consortium.public_key(member))
            code, _, err = cli("member", "add", key, "--name", f"org{index}", *deployment)
            assert code == 0, err
            federation.join(f"org{index}", member, index)
        federation.wait_online(*(f"org{index}" for index in range(MEMBERS)))
        yield federation
    finally:
        federation.processes.stop_all()


@dataclass(frozen=True)
class Access:
    """One line of the front's access log (format ``fleet`` in its nginx.conf)."""

    address: str
    request: str  # "POST /v1/fleet/push-object HTTP/1.1"
    status: int
    request_length: int
    bytes_sent: int


def access_lines(federation: FrontedFederation) -> list[Access]:
    rows = []
    for line in federation.access_log.read_text().splitlines():
        head, _, _, request, tail = line.split('"')
        status, request_length, bytes_sent, _ = tail.split()
        rows.append(
            Access(head.split()[1], request, int(status), int(request_length), int(bytes_sent))
        )
    return rows


def test_two_members_train_resnet18_through_the_front(
    fronted: FrontedFederation, member_data: Path
) -> None:
    # Execute: a round of ResNet-18; every update crosses the front in 5 MiB pieces (a
    # deployed round costs a minute here; more rounds add time, not coverage of the front)
    workdir = fronted.workdir
    run = subprocess.run(
        fractofl(
            "coordinator",
            "run",
            *fronted.deployment,
            f"data.root={member_data}",
            f"output.root={workdir / 'runs'}",
            "output.name=resnet",
            f"registry.root={workdir / 'registry'}",
            f"registry.private_key={workdir / 'keys' / 'c.key'}",
            f"registry.public_key={workdir / 'keys' / 'c.pub'}",
            "federation.rounds=1",
            *RESNET_RUN,
        ),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    # Assert: the round with both members, and the global model moved
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    run_dir = workdir / "runs" / "resnet"
    metrics = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 3  # header, rounds 0-1
    registry = ModelRegistry(workdir / "registry")
    trusted = load_public_key(workdir / "keys" / "c.pub")
    rounds = [registry.load_verified(v, trusted)[0].state_dict for v in registry.version_numbers()]
    cfg = from_nested(yaml.safe_load((run_dir / "config.yaml").read_text()))
    seed_everything(cfg.seed)
    initial = model_for(cfg).state_dict()
    final = load_checkpoint(run_dir / "model.pt").state_dict
    assert len(rounds) == 1
    for before, after in ((initial, rounds[0]), (initial, final)):
        moved = max(
            float((after[k].float() - before[k].float()).abs().max())
            for k in after
            if after[k].is_floating_point()
        )
        assert moved > 1e-4
    assert sum(p.numel() for p in final.values() if isinstance(p, torch.Tensor)) > 11_000_000
    # ...and the pieces passed the proxy: full-size push-object POSTs, nothing refused
    rows = access_lines(fronted)
    pushes = [r.request_length for r in rows if r.request.startswith("POST /v1/fleet/push-obj")]
    assert max(pushes) >= FLOWER_CHUNK
    assert [r for r in rows if r.status == 413 or r.status >= 500] == []


def member_side_flwr(tmp: Path, ca: Path, front_port: int, *args: str) -> str:
    """The Flower CLI on a member's machine, its connection pointed at the front; its
    output (the command must fail)."""
    home = tmp / "member-flwr-home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "front"\n[superlink.front]\n'
        f'address = "127.0.0.1:{front_port}"\nroot-certificates = "{ca}"\n'
    )
    result = subprocess.run(
        [flower_tool("flwr"), *args],
        env=flower_env(home),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def raw_request(port: int, ca: Path, method: str, path: str) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(ca))
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)
    try:
        connection.request(
            method, path, body=b"\x08\x01", headers={"Content-Type": "application/protobuf"}
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_the_control_plane_is_refused_from_a_members_side(
    fronted: FrontedFederation, tmp_path: Path
) -> None:
    # Prepare: what the SuperLink holds now, asked on its private port
    runs_before = flwr_json(fronted.files, "list")["runs"]
    nodes_before = node_statuses(fronted.files)
    app = tmp_path / "app"
    app.mkdir()
    (app / "pyproject.toml").write_text(flower_app_config(load_run_config()))
    ca, port = fronted.consortium.ca_cert, fronted.front_port
    outsider_key = str(fronted.consortium.public_key(fronted.consortium.outsider))
    # Execute: Flower's own CLI, then raw requests, through the front
    said = [
        member_side_flwr(tmp_path, ca, port, "run", str(app), "front"),
        member_side_flwr(tmp_path, ca, port, "supernode", "register", outsider_key, "front"),
        member_side_flwr(tmp_path, ca, port, "supernode", "list", "front"),
    ]
    raw = {
        path: raw_request(port, ca, "POST", path)
        for path in (
            "/v1/control/start-run",
            "/v1/control/register-node",
            "/v1/control/list-runs",
            "/v1/runtime/pull-messages",
            "/v1/runtime/get-nodes",
            "/docs",
            "/openapi.json",
            "/v1/fleet/../control/start-run",
            "/v1/fleet/%2e%2e/control/start-run",
            "/v1/fleet/..%2fcontrol/start-run",
            "/v1/fleet/get-run?next=/v1/control/start-run",
        )
    }
    fleet_get = raw_request(port, ca, "GET", "/v1/fleet/get-run")
    # Assert: all refused by the front (403 with a JSON reason), nothing changed behind it
    assert all("403 Forbidden" in text for text in said), said
    assert {path: status for path, (status, _) in raw.items()} == dict.fromkeys(raw, 403)
    assert fleet_get[0] == 403
    assert json.loads(raw["/docs"][1])["reason"].startswith("only the Fleet API")
    assert flwr_json(fronted.files, "list")["runs"] == runs_before
    assert node_statuses(fronted.files) == nodes_before


def test_an_unregistered_member_is_refused_at_the_front(fronted: FrontedFederation) -> None:
    # Execute: the outsider has a key pair and the CA, but was never added
    outsider = fronted.join("outsider", fronted.consortium.outsider, 0)
    outsider.wait(timeout=120)
    # Assert: Flower's refusal came back through the front
    assert outsider.returncode != 0
    assert "Failed to activate SuperNode" in fronted.join_log("outsider").read_text()
    activations = [r for r in access_lines(fronted) if "/v1/fleet/activate-node" in r.request]
    assert any(r.status == 412 for r in activations), activations
    assert sorted(fronted.statuses().values()) == ["online", "online"]


def test_a_revoked_member_exits_and_cannot_rejoin(fronted: FrontedFederation) -> None:
    # Prepare: a third organisation, added and online through the front
    member = fronted.consortium.members[2]
    key = str(fronted.consortium.public_key(member))
    assert cli("member", "add", key, "--name", "org2", *fronted.deployment)[0] == 0
    first = fronted.join("org2", member, 2)
    fronted.wait_online("org2")
    # Execute: revoke it, then let it try again with its old key, and re-add that key
    revoked = cli("member", "revoke", "org2", *fronted.deployment)
    first.wait(timeout=120)
    again = fronted.join("org2-again", member, 2)
    again.wait(timeout=120)
    re_add = cli("member", "add", key, "--name", "org2", *fronted.deployment)
    listing = cli("member", "list", "--json", *fronted.deployment)
    # Assert: the running SuperNode exited, the old key is refused, re-adding needs a new pair
    assert revoked[0] == 0 and "revoked org2" in revoked[1]
    assert first.poll() is not None  # exited by itself, within the wait above
    # ... saying why and whom to ask (the consortium as its CA names it, and the address)
    said = fronted.join_log("org2").read_text()
    assert "this member left the federation: the coordinator no longer accepts" in said
    assert "(`fractofl member revoke`). Ask the operator of test consortium CA" in said
    assert again.returncode != 0
    assert "Failed to activate SuperNode" in fronted.join_log("org2-again").read_text()
    assert re_add[0] == 1 and "needs a new key pair" in re_add[2]
    statuses = {row["name"]: row["status"] for row in json.loads(listing[1])}
    assert statuses == {"org0": "online", "org1": "online", "org2": "revoked"}


def test_a_restarted_coordinator_keeps_its_members(fronted: FrontedFederation) -> None:
    # Prepare: the coordinator's machine dies: SuperLink and front, no goodbye
    assert fronted.coordinator is not None
    os.killpg(fronted.coordinator.pid, signal.SIGKILL)
    fronted.coordinator.wait()
    # Execute: `coordinator up` again; the members do nothing
    fronted.up("up-again.log")
    fronted.wait_online("org0", "org1")
    code, out, _ = cli("coordinator", "status", *fronted.deployment)
    # Assert: the same members, reconnected through the front; the revoked one stays out
    assert code == 0
    assert "Control API refused (403)" in out
    assert "2 of 2 registered online" in out
    assert all(fronted.members[f"org{i}"].poll() is None for i in range(MEMBERS))
    assert fronted.statuses() == {"org0": "online", "org1": "online", "org2": "revoked"}
    # ...and a second `up` beside the running one is refused before it starts anything
    second = cli("coordinator", "up", *fronted.deployment)
    assert (
        second[0] == 1 and "is in use: is `fractofl coordinator up` already running" in (second[2])
    )


@pytest.mark.parametrize("nginx", ["fractofl-test-absent-nginx", "/opt/nowhere/nginx"])
def test_missing_nginx_is_one_clear_line(
    nginx: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a PATH without nginx; Debian's /usr/sbin, which is searched too, holds
    # nginx here, so the name is one that no folder holds
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    monkeypatch.chdir(tmp_path)
    # Execute
    code, out, err = cli("coordinator", "up", "--insecure", f"deployment.nginx={nginx}")
    # Assert: what to install and how, no traceback, nothing started
    assert code == 1 and out == ""
    assert "apt-get install nginx" in err and f"deployment.nginx={nginx}" in err
    assert err.startswith("fractofl: error:") and "Traceback" not in err
    assert not (tmp_path / "coordinator").exists()
