"""``fractofl simulate`` on a real two-node Ray cluster started on this machine.

Each node is a ``ray start --block`` process of its own (one CPU each, free ports, a
private temporary folder so that no other Ray user on the machine finds this cluster) in
its own process group, so the fixture stops exactly what it started, even when a test
fails.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fractofl.cli.ray_cluster import STATUS_STARTUP_S, RayClusterError, RayTarget, probe_head
from fractofl.server.recorder import RoundRow
from tests.conftest import easy_overrides, run_fractofl

pytestmark = pytest.mark.slow

RAY = Path(sys.executable).with_name("ray")
FRACTOFL = Path(sys.executable).with_name("fractofl")
START_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 300.0


@dataclass
class RayCluster:
    """A head and a worker node, each a ``ray start --block`` process group."""

    address: str
    nodes: dict[str, subprocess.Popen[bytes]]  # "head" / "worker" -> its `ray start`


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _node_options() -> list[str]:
    """One CPU, a small object store and free ports for everything a node listens on
    (two nodes share this machine, and other tests may run local Ray instances)."""
    ports = (
        "--node-manager-port",
        "--object-manager-port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--metrics-export-port",
        "--runtime-env-agent-port",
    )
    options = [item for option in ports for item in (option, str(_free_port()))]
    return [
        *options,
        "--num-cpus=1",
        f"--object-store-memory={80 * 1024 * 1024}",
        "--min-worker-port=0",  # any free port
        "--max-worker-port=0",
        "--disable-usage-stats",
        "--block",
    ]


def _start_node(arguments: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as output:
        return subprocess.Popen(
            [str(RAY), "start", *arguments, *_node_options()],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        )


def _wait_until_started(process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while "Ray runtime started" not in log.read_text(errors="replace"):
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, f"no Ray node after {START_TIMEOUT_S:g} s"
        time.sleep(0.2)


def _wait_for_nodes(address: str, count: int) -> None:
    """Poll ``ray status`` until the cluster lists ``count`` active nodes."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        status = subprocess.run(
            [str(RAY), "status", "--address", address], capture_output=True, text=True
        )
        active = status.stdout.split("Active:")[-1].split("Pending:")[0]
        if status.returncode == 0 and active.count("node_") == count:
            return
        assert time.monotonic() < deadline, status.stdout + status.stderr
        time.sleep(0.5)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each node's process group, SIGKILL what is left after a grace period."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for process in processes:
        # poll() reaps the group's leader, our child; init reaps the rest.
        while time.monotonic() < deadline and (process.poll() is None or _group_alive(process.pid)):
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    """A head and a worker node on this machine; always stopped afterwards."""
    # Short and private: Ray's socket paths live under it, and `ray start` records the
    # cluster's address there, where no other `ray.init()` on this machine looks.
    temp_dir = Path(tempfile.mkdtemp(prefix="frray-", dir="/tmp"))
    port = _free_port()
    address = f"127.0.0.1:{port}"
    started: list[subprocess.Popen[bytes]] = []
    try:
        head_options = [
            "--head",
            f"--port={port}",
            f"--temp-dir={temp_dir}",
            "--include-dashboard=false",
            f"--dashboard-port={_free_port()}",
            f"--ray-client-server-port={_free_port()}",
        ]
        head = _start_node(head_options, temp_dir / "head.log")
        started.append(head)
        _wait_until_started(head, temp_dir / "head.log")
        worker = _start_node([f"--address={address}"], temp_dir / "worker.log")
        started.append(worker)
        _wait_until_started(worker, temp_dir / "worker.log")
        _wait_for_nodes(address, 2)
        yield RayCluster(address, {"head": head, "worker": worker})
    finally:
        _stop(started)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _overrides(data: Path, runs: Path, name: str) -> list[str]:
    """The easy run, for a cluster (whose nodes give the cores: no ``local_cpus``)."""
    unset = ("train.local_epochs=", "federation.local_cpus=")
    base = [o for o in easy_overrides(data, runs) if not o.startswith(unset)]
    return [*base, "train.local_epochs=1", f"output.name={name}"]


def _rows_without_times(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [
            {k: v for k, v in row.items() if k not in RoundRow.clock_columns()}
            for row in csv.DictReader(handle)
        ]


def test_members_run_on_both_nodes_and_match_a_single_machine_run(
    ray_cluster: RayCluster, easy_dataset: Path, tmp_path: Path
) -> None:
    # Prepare: the same run on a local Ray instance with one core (one Ray worker runs
    # every member in turn).
    runs = tmp_path / "runs"
    single = run_fractofl(
        "simulate",
        *_overrides(easy_dataset, runs, "single"),
        "federation.local_cpus=1",
        cwd=tmp_path,
    )
    assert single.returncode == 0, single.stderr[-3000:]

    # Execute: on the two-node cluster.
    arguments = [
        *_overrides(easy_dataset, runs, "cluster"),
        f"federation.ray_address={ray_cluster.address}",
    ]
    cluster = run_fractofl("simulate", *arguments, cwd=tmp_path, timeout=RUN_TIMEOUT_S)

    # Assert: the run planned its members over both nodes, and the results are those of the
    # single machine. (Which node runs which message is Flower's actor pool's choice, the
    # first free actor; on a loaded machine one node's actor may not be up before a run this
    # small ends, so the test does not ask for messages on both: sampling which actor was
    # busy failed here once for each node. That member code runs on every node is the
    # data-lookup test's below.)
    output = cluster.stdout + cluster.stderr
    assert cluster.returncode == 0, output[-3000:]
    assert f"Ray cluster at {ray_cluster.address} (from federation.ray_address)" in output
    assert "members run on 2 node(s), 2 at a time" in output
    assert _rows_without_times(runs / "cluster") == _rows_without_times(runs / "single")
    final = torch.load(runs / "cluster" / "model.pt", weights_only=True)["state_dict"]
    expected = torch.load(runs / "single" / "model.pt", weights_only=True)["state_dict"]
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[k], expected[k]) for k in final)
    digests = {
        json.loads((runs / name / "summary.json").read_text())["config_digest"]
        for name in ("single", "cluster")
    }
    assert len(digests) == 1  # where members run is not part of what the run trains


# A driver that runs the member's data lookup as a Ray task on each node of the cluster.
MEMBER_ON_EACH_NODE = """
import json, sys
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from fractofl.client.member import MemberDataMissingError, member_data_dir
from fractofl.core.config.run_config import RunConfig

def look_for_member_0(root):
    cfg = RunConfig()
    cfg.data.root = root
    try:
        member_data_dir({"partition-id": 0}, cfg)
    except MemberDataMissingError as exc:
        return str(exc)
    return "found"

ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
task = ray.remote(num_cpus=0)(look_for_member_0)
on_node = [NodeAffinitySchedulingStrategy(n, soft=False) for n in nodes]
replies = [task.options(scheduling_strategy=s).remote(sys.argv[2]) for s in on_node]
print(json.dumps(dict(zip(nodes, ray.get(replies, timeout=120)))))
"""


def test_a_member_without_its_data_on_a_node_names_the_node_and_the_folder(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    # Prepare: a data root that no node has.
    root = tmp_path / "not-on-any-node"
    # Execute: a simulated member's lookup, run on each node.
    result = subprocess.run(
        [sys.executable, "-c", MEMBER_ON_EACH_NODE, ray_cluster.address, str(root)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    # Assert: each node's reply names that node (Ray's node id) and the folder.
    assert result.returncode == 0, result.stderr[-3000:]
    replies = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(replies) == 2
    for node_id, message in replies.items():
        assert f"member data folder {root / 'members' / 'member-00'} is not on host " in message
        assert f"Ray node {node_id[:12]} (" in message
        assert "every node needs every member's folder at this path" in message


def test_a_cluster_without_a_node_that_fits_one_member_is_refused_before_the_run(
    ray_cluster: RayCluster, easy_dataset: Path, tmp_path: Path
) -> None:
    # Prepare: two nodes of one CPU: two CPUs in all, but never two on one node. Ray's own
    # RAY_ADDRESS names the cluster, as federation.ray_address is empty.
    runs = tmp_path / "runs"
    arguments = [*_overrides(easy_dataset, runs, "too-big"), "federation.member_cpus=2"]
    # Execute
    result = subprocess.run(
        [str(FRACTOFL), "simulate", *arguments],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "RAY_ADDRESS": ray_cluster.address},
        timeout=RUN_TIMEOUT_S,
    )
    # Assert: refused with the settings named and what to do; no run folder written.
    assert result.returncode == 1, result.stderr[-3000:]
    assert (
        f"the Ray cluster at {ray_cluster.address} (from the environment variable "
        "RAY_ADDRESS, as federation.ray_address is empty) has no node that fits one member: "
        "each needs federation.member_cpus=2 CPUs and federation.member_gpus=0 GPUs on one "
        "node" in result.stderr
    )
    assert "cluster total 2 CPU, 0 GPU; a member never spans nodes" in result.stderr
    assert "Lower federation.member_cpus or federation.member_gpus" in result.stderr
    assert not (runs / "too-big").exists()


def test_an_address_where_nothing_listens_fails_at_once(easy_dataset: Path, tmp_path: Path) -> None:
    # Prepare: a port nobody listens on.
    port = _free_port()
    runs = tmp_path / "runs"
    started = time.monotonic()
    # Execute
    result = run_fractofl(
        "simulate",
        *_overrides(easy_dataset, runs, "nowhere"),
        f"federation.ray_address=127.0.0.1:{port}",
        cwd=tmp_path,
        timeout=120,
    )
    # Assert: a clear refusal, without Ray's minutes of retries, and nothing written.
    assert result.returncode == 1, result.stderr[-3000:]
    assert (
        f"no Ray cluster at 127.0.0.1:{port} (from federation.ray_address): Connection refused;"
        f" start the cluster's head there (`ray start --head --port {port}`) or correct "
        "federation.ray_address" in result.stderr
    )
    assert time.monotonic() - started < 90
    assert not (runs / "nowhere").exists()


def test_an_address_that_answers_but_is_no_ray_head_fails_within_the_timeout() -> None:
    # Prepare: a port that accepts connections and never says anything.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        # Execute
        with pytest.raises(RayClusterError) as raised:
            probe_head(RayTarget(address), timeout_s=2)
    # Assert: refused after the timeout and `ray status`'s own start, not Ray's minutes.
    assert (
        f"{address} (from federation.ray_address) answers, but not as a Ray cluster's head "
        "within federation.ray_connect_timeout_s=2 s" in str(raised.value)
    )
    assert time.monotonic() - started < 2 + STATUS_STARTUP_S
