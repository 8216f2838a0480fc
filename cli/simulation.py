"""Launching a federated run on Flower's Simulation Engine with a composed run config.

Flower's public ``run_simulation`` gives the apps an empty ``context.run_config``; the
engine reads the members' run config from an app directory's ``pyproject.toml``, as
``flwr run`` does. So the launcher writes the flat config as such an app directory and
calls the engine entry point that ``flwr-simulation`` itself uses (pinned flwr==1.42.0).
The members run on a local Ray instance, or on an existing Ray cluster
(``federation.ray_address``, see :mod:`fractofl.cli.ray_cluster`).
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
from pathlib import Path

from flwr.app import Context, RecordDict
from flwr.simulation.run_simulation import _run_simulation
from flwr.supercore.telemetry import EventType

from fractofl.cli.app_dirs import APP_DIR_PREFIX, remove_stale_app_dirs
from fractofl.cli.ray_cluster import RayTarget, cluster_init_args, ray_session
from fractofl.client.app import app as client_app
from fractofl.core.config.run_config import RunConfig, to_flat
from fractofl.core.trust.app_bundle import app_pyproject
from fractofl.server.app import app as server_app

log = logging.getLogger("fractofl")


def flower_app_config(cfg: RunConfig) -> str:
    """A Flower app ``pyproject.toml`` whose ``[tool.flwr.app.config]`` is the run config."""
    return app_pyproject(to_flat(cfg))


def backend_config(
    cfg: RunConfig, target: RayTarget
) -> dict[str, dict[str, float | int | bool | str]]:
    """Ray resources: CPU cores (and GPU share) per simulated member, on a local Ray
    instance with ``federation.local_cpus`` cores, by default all of this machine's
    (``address="local"``: never a cluster that ``ray start`` or ``RAY_ADDRESS`` points at),
    or on the cluster at ``target``."""
    fed = cfg.federation
    init_args: dict[str, float | int | bool | str] = (
        {
            "address": "local",
            "num_cpus": fed.local_cpus or os.cpu_count() or 1,
            "include_dashboard": False,
        }
        if target.local
        else cluster_init_args(target)
    )
    return {
        "client_resources": {
            "num_cpus": fed.member_cpus,
            "num_gpus": fed.member_gpus,
        },
        "init_args": init_args,
    }


def simulate(cfg: RunConfig) -> None:
    """Run the ServerApp and ``federation.members`` virtual ClientApps to completion, on
    a local Ray instance or on the cluster that ``federation.ray_address`` names (connected
    and checked first: RayClusterError before the run folder is written)."""
    flat = to_flat(cfg)
    for folder in remove_stale_app_dirs(Path(tempfile.gettempdir())):
        log.info("removed %s, left by a simulation that was killed", folder)
    with (
        ray_session(cfg) as target,
        tempfile.TemporaryDirectory(prefix=f"{APP_DIR_PREFIX}{os.getpid()}-") as app_dir,
    ):
        Path(app_dir, "pyproject.toml").write_text(flower_app_config(cfg))
        context = Context(
            run_id=random.getrandbits(63),
            node_id=0,
            node_config={},
            state=RecordDict(),
            run_config=dict(flat),
        )
        _run_simulation(
            num_supernodes=cfg.federation.members,
            exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
            client_app=client_app,
            server_app=server_app,
            backend_config=backend_config(cfg, target),  # type: ignore[arg-type]
            server_app_context=context,
            app_dir=app_dir,
            is_app=True,  # makes the engine read the members' run config from app_dir
        )
