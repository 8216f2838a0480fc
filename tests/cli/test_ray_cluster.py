"""Choosing and checking the Ray cluster of a simulation, without a cluster: where the
address comes from, which addresses are refused, how many members fit on each node, and
what a node lacks of the members' data. ``tests/server/test_ray_cluster.py`` runs the
same code against a real two-node cluster."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from fractofl.cli.config import ConfigError, load_run_config
from fractofl.cli.ray_cluster import (
    LOCAL,
    DataOnNodes,
    RayClusterError,
    RayTarget,
    check_capacity,
    check_ray_address,
    look_on_node,
    member_slots,
    ray_session,
    ray_target,
)
from fractofl.cli.simulation import backend_config
from fractofl.core.config.run_config import RunConfig, config_digest


def _config(ray_address: str = "") -> RunConfig:
    cfg = RunConfig()
    cfg.federation.ray_address = ray_address
    return cfg


def _node(node_id: str, cpus: float, gpus: float = 0.0, alive: bool = True) -> dict[str, Any]:
    resources = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    return {
        "NodeID": node_id,
        "Alive": alive,
        "NodeManagerAddress": "10.0.0.5",
        "Resources": resources,
    }


@pytest.mark.parametrize(
    ("setting", "environment", "expected"),
    [
        ("", {}, RayTarget(LOCAL)),
        ("", {"RAY_ADDRESS": "10.0.0.5:6379"}, RayTarget("10.0.0.5:6379", "RAY_ADDRESS")),
        ("10.0.0.7:6379", {"RAY_ADDRESS": "10.0.0.5:6379"}, RayTarget("10.0.0.7:6379")),
        ("local", {"RAY_ADDRESS": "10.0.0.5:6379"}, RayTarget(LOCAL)),
        ("", {"RAY_ADDRESS": "local"}, RayTarget(LOCAL, "RAY_ADDRESS")),
    ],
)
def test_the_setting_wins_over_ray_address_and_both_empty_mean_a_local_instance(
    setting: str, environment: dict[str, str], expected: RayTarget
) -> None:
    # Execute
    target = ray_target(_config(setting), environment)
    # Assert
    assert target == expected
    assert target.local == (expected.address == LOCAL)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("auto", r"federation\.ray_address='auto' is not supported"),
        ("ray://10.0.0.5:10001", r"Ray Client addresses \(ray://\) are not supported"),
        ("10.0.0.5", r"federation\.ray_address='10\.0\.0\.5' is not host:port"),
        ("10.0.0.5:0", r"is not host:port"),
        (":6379", r"is not host:port"),
    ],
)
def test_addresses_other_than_host_and_port_are_refused_with_what_to_do(
    value: str, message: str
) -> None:
    with pytest.raises(RayClusterError, match=message) as raised:
        check_ray_address(value)
    assert "host:port (what `ray start --head` printed, e.g. 10.0.0.5:6379)" in str(raised.value)


def test_a_bad_ray_address_variable_is_named_as_such() -> None:
    with pytest.raises(RayClusterError, match=r"^RAY_ADDRESS='auto' is not supported"):
        ray_target(_config(), {"RAY_ADDRESS": "auto"})


def test_the_configuration_check_refuses_bad_ray_settings() -> None:
    with pytest.raises(ConfigError, match=r"federation\.ray_address='auto'"):
        load_run_config(["federation.ray_address=auto"], training=False)
    with pytest.raises(ConfigError, match=r"federation\.member_cpus=0 must be > 0"):
        load_run_config(["federation.member_cpus=0"], training=False)
    with pytest.raises(ConfigError, match=r"federation\.ray_connect_timeout_s=0 must be > 0"):
        load_run_config(["federation.ray_connect_timeout_s=0"], training=False)
    cfg = load_run_config(["federation.ray_address=head.example:6379"], training=False)
    assert cfg.federation.ray_address == "head.example:6379"


def test_the_cluster_address_is_not_part_of_the_config_digest() -> None:
    assert config_digest(_config("10.0.0.5:6379")) == config_digest(_config())


def test_a_local_instance_never_joins_a_cluster_and_a_cluster_gets_no_cpu_count() -> None:
    # Execute
    local = backend_config(RunConfig(), RayTarget(LOCAL))
    cluster = backend_config(RunConfig(), RayTarget("10.0.0.5:6379"))
    # Assert: Ray refuses num_cpus when it joins a cluster.
    assert local["init_args"]["address"] == "local"
    assert local["init_args"]["num_cpus"] == (os.cpu_count() or 1)
    assert cluster["init_args"]["address"] == "10.0.0.5:6379"
    assert "num_cpus" not in cluster["init_args"]
    assert local["client_resources"] == cluster["client_resources"]


def test_local_cpus_caps_the_local_instance_and_leaves_the_digest_alone() -> None:
    # Prepare
    cfg = load_run_config(["federation.local_cpus=1"], training=False)
    # Execute
    local = backend_config(cfg, RayTarget(LOCAL))
    # Assert: one core for the local instance (one member at a time); not what is trained.
    assert local["init_args"]["num_cpus"] == 1
    assert config_digest(cfg) == config_digest(load_run_config([], training=False))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["federation.local_cpus=-1"], r"federation\.local_cpus=-1 must be a whole number >= 0"),
        (
            ["federation.local_cpus=1", "federation.member_cpus=2"],
            r"federation\.local_cpus=1 holds no member: each needs federation\.member_cpus=2",
        ),
        (
            ["federation.local_cpus=2", "federation.ray_address=head.example:6379"],
            r"federation\.local_cpus=2 is for a local Ray instance, but the members would "
            r"run on the Ray cluster at head\.example:6379 \(from federation\.ray_address\)",
        ),
    ],
)
def test_the_configuration_check_refuses_bad_local_cpus(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_run_config(overrides, training=False)


def test_local_cpus_with_a_cluster_from_ray_address_is_refused_before_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: Ray's own variable names a cluster (nothing listens there: never reached).
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")
    cfg = load_run_config(["federation.local_cpus=1"], training=False)
    # Execute / Assert
    with (
        pytest.raises(
            RayClusterError, match=r"federation\.local_cpus=1 is for a local Ray"
        ) as raised,
        ray_session(cfg),
    ):
        pass
    assert "from the environment variable RAY_ADDRESS" in str(raised.value)
    assert "set federation.local_cpus=0" in str(raised.value)


def test_members_fit_node_by_node_as_flower_places_them() -> None:
    # Prepare
    nodes = [
        _node("a", cpus=4),
        _node("b", cpus=3, gpus=1),
        _node("c", cpus=8, alive=False),
        {"NodeID": "d", "Alive": True, "Resources": {}},  # a detached node
    ]
    # Execute / Assert
    assert member_slots(nodes, 2.0, 0.0) == {"a": 2, "b": 1}
    assert member_slots(nodes, 1.0, 0.5) == {"a": 0, "b": 2}
    assert member_slots(nodes, 5.0, 0.0) == {"a": 0, "b": 0}


def test_a_cluster_whose_cpus_are_spread_too_thin_is_refused() -> None:
    # Prepare: two CPUs in all, one per node; a member needs two on one node.
    cfg = _config("10.0.0.5:6379")
    cfg.federation.member_cpus = 2.0
    nodes = [_node("node-one-0000", cpus=1), _node("node-two-0000", cpus=1)]
    # Execute
    with pytest.raises(RayClusterError) as raised:
        check_capacity(RayTarget("10.0.0.5:6379"), nodes, cfg.federation, {"CPU": 2.0})
    # Assert
    message = str(raised.value)
    assert "has no node that fits one member" in message
    assert "federation.member_cpus=2 CPUs" in message
    assert "node node-one-000 (10.0.0.5): 1 CPU, 0 GPU" in message
    assert "cluster total 2 CPU, 0 GPU; a member never spans nodes" in message
    assert check_capacity(RayTarget("x:1"), [_node("big", cpus=2)], cfg.federation, {}) == {
        "big": 1
    }


def test_a_node_reports_missing_member_folders_and_another_synthetic_set(tmp_path: Path) -> None:
    # Prepare: one of two member folders, and a manifest other than the driver's.
    (tmp_path / "member-00").mkdir()
    manifest = tmp_path / "manifest.json"
    manifest.write_text('{"digest": "made with other settings"}')
    data = DataOnNodes(
        folders=(str(tmp_path / "member-00"), str(tmp_path / "member-01")),
        manifest=str(manifest),
        manifest_sha256="0" * 64,
    )
    # Execute
    host, problems = look_on_node(data)
    # Assert
    assert host
    assert problems == [
        f"no data folder {tmp_path / 'member-01'}",
        f"{manifest} differs from the driver's: a set made with other settings",
    ]
    assert look_on_node(DataOnNodes((str(tmp_path / "member-00"),)))[1] == []
