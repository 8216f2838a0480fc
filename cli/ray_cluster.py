"""Flower's Simulation Engine on an existing Ray cluster (``federation.ray_address``).

Flower's Ray backend (flwr 1.42, ``server/superlink/fleet/vce/backend/raybackend.py``)
calls ``ray.init(**init_args)`` only when Ray is not initialised yet; it then creates as
many ``ClientAppActor`` s as fit ``client_resources`` on each node
(``simulation/ray_transport/ray_actor.py``, ``pool_size_from_resources``, node by node)
and hands each member's message to whichever actor is idle: any member may run on any
node, in any round. So for a cluster the launcher connects first, where it can bound the
wait and check the cluster, and Flower reuses that connection (and shuts it down):

1. a bounded probe of the head, because ``ray.init`` retries a silent address for about
   twelve minutes: a TCP connection, then ``ray status`` in a child process;
2. ``ray.init(address=...)``, without ``num_cpus`` (Ray refuses it when connecting);
3. some node must fit one member (``federation.member_cpus`` and ``member_gpus``);
4. every node that will host members runs a small task that imports fractofl and looks
   for every member's data folder (and the synthetic set's manifest) at the run's paths.

Ray is imported only by the functions that talk to a cluster, so the configuration
check can parse an address without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fractofl.core.config.run_config import FederationConfig, RunConfig

log = logging.getLogger("fractofl")

SETTING = "federation.ray_address"
RAY_ADDRESS_ENV = "RAY_ADDRESS"
LOCAL = "local"
NODE_CHECK_TIMEOUT_S = 120.0  # a node's first task starts a Python worker there
STATUS_STARTUP_S = 20.0  # `ray status` itself imports Ray before it connects
NODES_LISTED = 8  # nodes a message lists one by one
# Flower's own defaults for the Ray backend (flwr.supercore.constant.DEFAULT_SIMULATION_CONFIG)
RAY_LOGGING = {"logging_level": "WARNING", "log_to_driver": True}


class RayClusterError(RuntimeError):
    """The Ray cluster named by ``federation.ray_address`` (or ``RAY_ADDRESS``) cannot run
    the members; the message names the setting and what to do."""


@dataclass(frozen=True)
class RayTarget:
    """Where the simulated members run: ``local`` (a Ray instance this process starts)
    or a cluster's head as ``host:port``; ``source`` is the setting that said so."""

    address: str
    source: str = SETTING

    @property
    def local(self) -> bool:
        """True for a local Ray instance."""
        return self.address == LOCAL

    @property
    def origin(self) -> str:
        """Where the address came from, for messages."""
        if self.source == SETTING:
            return f"from {SETTING}"
        return f"from the environment variable {self.source}, as {SETTING} is empty"


def ray_target(cfg: RunConfig, environ: Mapping[str, str] = os.environ) -> RayTarget:
    """``federation.ray_address``; when it is empty Ray's own ``RAY_ADDRESS``; when both
    are empty a local instance. The setting wins: ``local`` ignores ``RAY_ADDRESS``."""
    if cfg.federation.ray_address.strip():
        return RayTarget(check_ray_address(cfg.federation.ray_address, SETTING), SETTING)
    from_environment = environ.get(RAY_ADDRESS_ENV, "").strip()
    if from_environment:
        address = check_ray_address(from_environment, RAY_ADDRESS_ENV)
        return RayTarget(address, RAY_ADDRESS_ENV)
    return RayTarget(LOCAL, SETTING)


def refuse_local_cpus_on_a_cluster(local_cpus: int, target: RayTarget) -> None:
    """RayClusterError when ``federation.local_cpus`` is set but the members would run on
    a cluster, whose nodes give their own cores."""
    if local_cpus and not target.local:
        raise RayClusterError(
            f"federation.local_cpus={local_cpus} is for a local Ray instance, but the members "
            f"would run on the Ray cluster at {target.address} ({target.origin}), whose nodes "
            "give their cores with `ray start --num-cpus`: set federation.local_cpus=0"
        )


def check_ray_address(value: str, setting: str = SETTING) -> str:
    """``value`` as ``host:port`` (or ``local``); RayClusterError naming ``setting`` when it
    is neither."""
    address = value.strip()
    if address == LOCAL:
        return LOCAL
    example = (
        "name the cluster's head as host:port (what `ray start --head` printed, e.g. 10.0.0.5:6379)"
    )
    if address == "auto":
        raise RayClusterError(
            f"{setting}='auto' is not supported (it picks whichever Ray instance this "
            f"machine started last); {example}"
        )
    if "://" in address:
        raise RayClusterError(
            f"{setting}={value!r}: Ray Client addresses (ray://) are not supported; run "
            f"fractofl on a node of the cluster and {example}"
        )
    host, _, port = address.rpartition(":")
    if not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise RayClusterError(
            f"{setting}={value!r} is not host:port; {example}, or leave it empty for a "
            "local Ray instance"
        )
    return address


def cluster_init_args(target: RayTarget) -> dict[str, Any]:
    """``ray.init`` arguments for ``target``: join the cluster, with Flower's logging."""
    return {"address": target.address, **RAY_LOGGING}


def probe_head(target: RayTarget, timeout_s: float) -> None:
    """Fail within about ``timeout_s`` unless a Ray cluster's head answers at ``target``."""
    host, _, port = target.address.rpartition(":")
    waited = f"within federation.ray_connect_timeout_s={timeout_s:g} s"
    what_to_do = (
        f"start the cluster's head there (`ray start --head --port {port}`) or correct "
        f"{target.source}"
    )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = f"no answer {waited}" if isinstance(exc, TimeoutError) else exc.strerror
        raise RayClusterError(
            f"no Ray cluster at {target.address} ({target.origin}): {reason or exc}; {what_to_do}"
        ) from None
    env = {
        **os.environ,
        "RAY_py_gcs_connect_timeout_s": str(max(1, round(timeout_s))),
        "RAY_gcs_rpc_server_connect_timeout_s": str(max(1, min(5, round(timeout_s)))),
    }
    status = [sys.executable, "-m", "ray.scripts.scripts", "status", "--address", target.address]
    try:
        result = subprocess.run(
            status, capture_output=True, text=True, env=env, timeout=timeout_s + STATUS_STARTUP_S
        )
    except subprocess.TimeoutExpired:
        result = None
    if result is None or result.returncode != 0:
        said = (result.stderr.strip().splitlines() or [""])[-1] if result else "no reply"
        raise RayClusterError(
            f"{target.address} ({target.origin}) answers, but not as a Ray cluster's head "
            f"{waited} (`ray status`: {said}); {what_to_do}"
        )


def member_slots(
    nodes: Sequence[Mapping[str, Any]], member_cpus: float, member_gpus: float
) -> dict[str, int]:
    """Members that fit at once on each alive node (node id -> count), as Flower's
    ``pool_size_from_resources`` counts them: a member never spans nodes."""
    slots: dict[str, int] = {}
    for node in nodes:
        if not node.get("Alive") or not node.get("Resources"):
            continue
        resources = node["Resources"]
        fit = int(resources.get("CPU", 0) // member_cpus)
        if member_gpus > 0:
            fit = min(fit, int(resources.get("GPU", 0) // member_gpus))
        slots[str(node["NodeID"])] = fit
    return slots


def describe_node(node: Mapping[str, Any]) -> str:
    """``node 1a2b3c4d5e6f (10.0.0.5)``: how messages name a node."""
    return f"node {str(node['NodeID'])[:12]} ({node.get('NodeManagerAddress', '?')})"


def check_capacity(
    target: RayTarget,
    nodes: Sequence[Mapping[str, Any]],
    fed: FederationConfig,
    totals: Mapping[str, float],
) -> dict[str, int]:
    """The members per node; RayClusterError when no node fits a single member."""
    slots = member_slots(nodes, fed.member_cpus, fed.member_gpus)
    if sum(slots.values()) > 0:
        return slots
    alive = [n for n in nodes if n.get("Alive") and n.get("Resources")]
    offered = "; ".join(
        f"{describe_node(n)}: {n['Resources'].get('CPU', 0):g} CPU, "
        f"{n['Resources'].get('GPU', 0):g} GPU"
        for n in alive[:NODES_LISTED]
    ) + (f"; and {len(alive) - NODES_LISTED} more" if len(alive) > NODES_LISTED else "")
    raise RayClusterError(
        f"the Ray cluster at {target.address} ({target.origin}) has no node that fits one "
        f"member: each needs federation.member_cpus={fed.member_cpus:g} CPUs and "
        f"federation.member_gpus={fed.member_gpus:g} GPUs on one node, and its nodes offer "
        f"{offered or 'nothing'} (cluster total {totals.get('CPU', 0):g} CPU, "
        f"{totals.get('GPU', 0):g} GPU; a member never spans nodes). Lower "
        "federation.member_cpus or federation.member_gpus, or add a node that large"
    )


@dataclass(frozen=True)
class DataOnNodes:
    """What every member-hosting node must hold: the members' folders and, for a
    synthetic set, its manifest with the driver's digest."""

    folders: tuple[str, ...]
    manifest: str = ""
    manifest_sha256: str = ""


def data_on_nodes(cfg: RunConfig) -> DataOnNodes:
    """The members' data as this (the driver's) machine has it."""
    from fractofl.cli.datasets import member_dirs
    from fractofl.core.synth.dataset import MANIFEST

    folders = tuple(str(p) for p in member_dirs(cfg))
    manifest = Path(cfg.data.root) / MANIFEST
    if cfg.data.source != "synthetic" or not manifest.is_file():
        return DataOnNodes(folders)
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    return DataOnNodes(folders, str(manifest), digest)


def look_on_node(data: DataOnNodes) -> tuple[str, list[str]]:
    """Run on a cluster node (a Ray task): its host name and what it lacks of ``data``.
    Importing this function there is itself the check that fractofl is installed."""
    problems = [f"no data folder {f}" for f in data.folders if not Path(f).is_dir()]
    if data.manifest:
        manifest = Path(data.manifest)
        if not manifest.is_file():
            problems.append(f"no synthetic set manifest {manifest}")
        elif hashlib.sha256(manifest.read_bytes()).hexdigest() != data.manifest_sha256:
            problems.append(f"{manifest} differs from the driver's: a set made with other settings")
    return socket.gethostname(), problems


def check_nodes(
    target: RayTarget, nodes: Sequence[Mapping[str, Any]], hosts: Sequence[str], data: DataOnNodes
) -> None:
    """Run :func:`look_on_node` on every node in ``hosts`` (node ids); RayClusterError
    naming each node that cannot import fractofl or lacks a member's data."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    by_id = {str(n["NodeID"]): n for n in nodes}
    task = ray.remote(num_cpus=0, max_retries=0)(look_on_node)
    pending = {
        task.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)
        ).remote(data): node_id
        for node_id in hosts
    }
    done, late = ray.wait(list(pending), num_returns=len(pending), timeout=NODE_CHECK_TIMEOUT_S)
    problems = [
        f"{describe_node(by_id[pending[ref]])} did not run a check within "
        f"{NODE_CHECK_TIMEOUT_S:g} s"
        for ref in late
    ]
    for ref in done:
        where = describe_node(by_id[pending[ref]])
        try:
            host, missing = ray.get(ref)
        except ray.exceptions.RayError as exc:
            first = next((line for line in str(exc).splitlines() if line.strip()), repr(exc))
            problems.append(f"{where} cannot run fractofl's code: {first.strip()}")
            continue
        problems += [f"{where}, host {host}: {item}" for item in missing]
    if problems:
        raise RayClusterError(
            f"the Ray cluster at {target.address} ({target.origin}) cannot run these "
            f"members: {'; '.join(problems)}. Every node needs fractofl in the environment "
            "its `ray start` runs, and every member's data at the same path (a shared "
            "folder, or `fractofl synth` with the run's settings on each node); see the "
            "README, 'On a Ray cluster'"
        )


@contextlib.contextmanager
def ray_session(cfg: RunConfig) -> Iterator[RayTarget]:
    """Where the members run, connected and checked; for a cluster, Ray stays connected
    inside the block (Flower reuses the connection) and is shut down after it."""
    target = ray_target(cfg)
    if target.local:
        yield target
        return
    refuse_local_cpus_on_a_cluster(cfg.federation.local_cpus, target)
    import ray

    fed = cfg.federation
    probe_head(target, fed.ray_connect_timeout_s)
    try:
        ray.init(**cluster_init_args(target))
    except Exception as exc:  # ConnectionError, version mismatch, no raylet on this machine
        raise RayClusterError(
            f"could not join the Ray cluster at {target.address} ({target.origin}): {exc}. "
            f"Run fractofl on a node of the cluster, with Ray {ray.__version__} like its nodes"
        ) from exc
    try:
        nodes = ray.nodes()
        slots = check_capacity(target, nodes, fed, ray.cluster_resources())
        hosts = [node_id for node_id, fit in slots.items() if fit > 0]
        check_nodes(target, nodes, hosts, data_on_nodes(cfg))
        by_id = {str(n["NodeID"]): n for n in nodes}
        log.info(
            "Ray cluster at %s (%s): members run on %d node(s), %d at a time (%s)",
            target.address,
            target.origin,
            len(hosts),
            sum(slots.values()),
            ", ".join(f"{describe_node(by_id[h])}: {slots[h]}" for h in hosts),
        )
        yield target
    finally:
        ray.shutdown()
