"""Hydra composition, overrides, loud unknown keys, and the config reaching the apps."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from flwr.common.config import get_fused_config_from_dir
from omegaconf import OmegaConf

from fractofl.cli.config import ConfigError, compose_config, load_run_config, to_run_config
from fractofl.cli.simulation import flower_app_config
from fractofl.core.config.run_config import RunConfig, from_flat, to_flat

REPO = Path(__file__).resolve().parents[2]


def _leaf_keys(node: object, prefix: str = "") -> set[str]:
    # An empty table (strategy.args: {}) has no leaf to carry.
    if isinstance(node, dict):
        keys: set[str] = set()
        for key, value in node.items():
            keys |= _leaf_keys(value, f"{prefix}{key}.")
        return keys
    return {prefix.rstrip(".")}


def test_defaults_match_the_product_brief() -> None:
    cfg = load_run_config()
    assert cfg.data.classes == ["fatigue", "ductile", "cleavage", "intergranular"]
    assert (cfg.federation.members, cfg.data.alpha, cfg.data.partition) == (4, 0.5, "dirichlet")
    assert cfg.federation.rounds >= 5
    assert cfg.strategy.name == "fedavg"
    assert cfg.model.name == "small_cnn" and cfg.model.pretrained_weights == ""


def test_overrides_and_group_choice() -> None:
    cfg = load_run_config(
        ["federation.rounds=20", "strategy=fedavg", "data.alpha=0.1", "model=resnet18"]
    )
    assert cfg.federation.rounds == 20
    assert cfg.data.alpha == 0.1
    assert cfg.model.name == "resnet18" and cfg.model.args == {
        "small_input": False,
        "norm": "batch",
        "norm_groups": 32,
    }


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("federation.roundz=3", r"valid keys in 'federation': .*rounds.*did you mean 'rounds'"),
        ("+colour=red", r"unknown config key 'colour'; valid keys at the top level: seed, model"),
        ("strategy=fedfoo", r"Available options in 'strategy'"),
        ("model=vgg", r"Available options in 'model'"),
        ("+model.args.depth=3", r"does not take argument\(s\) \['depth'\].*takes: width, dropout"),
        ("+data.synth.style.noize=1", r"unknown key\(s\) \['noize'\] in data.synth.style"),
        ("+data.synth.style.noise=-1", r"SynthStyle.noise"),
        ("data.synth.style={noise: 1}", r"use \+data.synth.style"),
        ("data.classes=[fatigue]", r"at least two classes"),
        ("data.partition=kmeans", r"valid: dirichlet, iid"),
        ("federation.rounds=many", r"federation.rounds"),
        ("federation.min_train_members=9", r"exceeds federation.members=4"),
        ("updates.retain_freed_mb=64", r"updates.retain_freed_mb=64 must be between 0"),
        ("output.resume=true", r"output.resume=true needs output.name"),
        ("federation.fault=explode", r"the fault must be one of none, raise, hang"),
        ("federation.attack=flood", r"federation.attack='flood': unknown 'flood'; valid: none"),
        (
            "federation.attack='sign_flip,nan'",
            r"names 2 attacks for federation.attackers=0: give one attack for all, or one per",
        ),
        ("federation.attackers=5", r"federation.attackers=5: must be between 0 and .*=4"),
        ("federation.fault_rounds=two", r"comma-separated round numbers"),
        (
            "model.args.norm=layer",
            r"model.args.norm='layer' is not a normalisation; .*batch, group",
        ),
        ("train.personalize_epochs=-1", r"train.personalize_epochs=-1 must be at least 0"),
        ("train.personalize_layers=head", r"personalize_layers='head'; valid: classifier, all"),
        ("train.loss=focal", r"train.loss='focal'; valid: cross_entropy, balanced_softmax"),
        ("train.balanced_softmax_floor=0", r"train.balanced_softmax_floor=0.0 must be above 0"),
    ],
)
def test_bad_config_fails_with_the_valid_choices(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_run_config([override])


def test_a_strategy_value_it_refuses_stops_the_run_before_it_starts() -> None:
    with pytest.raises(ConfigError, match=r"strategy.args.server_momentum=1.0: must be below 1"):
        load_run_config(["strategy=fedavgm", "strategy.args.server_momentum=1.0"])
    assert load_run_config(["strategy=fedavgm"]).strategy.args == {
        "server_learning_rate": 1.0,
        "server_momentum": 0.5,
    }


def test_cross_site_evaluation_is_refused_where_members_models_must_stay_hidden() -> None:
    for privacy in ("privacy.dp=true", "privacy.secure_aggregation=true"):
        with pytest.raises(ConfigError, match=r"federation.cross_site sends each member's"):
            load_run_config(["federation.cross_site=true", privacy])


def test_every_hydra_key_reaches_the_apps(tmp_path: Path) -> None:
    # Prepare: a config that differs from the defaults in every group.
    overrides = [
        "seed=5",
        "model.image_size=40",
        "model.args.width=12",
        "data.alpha=0.3",
        "data.classes=[fatigue,ductile,cleavage]",
        "+data.synth.style.noise=0.7",
        "train.lr=0.02",
        "federation.rounds=3",
        "output.name=x",
    ]
    composed = compose_config(overrides)
    expected = to_run_config(composed)
    # Execute: the same route as a simulation, through Flower's own config reader.
    (tmp_path / "pyproject.toml").write_text(flower_app_config(expected))
    seen_by_apps = get_fused_config_from_dir(tmp_path, {})
    rebuilt = from_flat(seen_by_apps)
    # Assert: every leaf of the Hydra config arrived, with its value.
    hydra_leaves = _leaf_keys(OmegaConf.to_container(composed, resolve=True))
    assert hydra_leaves == set(seen_by_apps)
    assert rebuilt == expected
    assert rebuilt.data.synth.style == {"noise": 0.7}


def test_pyproject_run_config_equals_the_hydra_defaults() -> None:
    # `flwr run .` reads [tool.flwr.app.config]: it must be the same defaults as `fractofl`.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    app = project["tool"]["flwr"]["app"]
    assert app["components"] == {
        "serverapp": "fractofl.server.app:app",
        "clientapp": "fractofl.client.app:app",
    }
    assert from_flat(app["config"]) == load_run_config()
    assert set(app["config"]) == set(to_flat(load_run_config()))


def test_run_config_type_is_the_schema() -> None:
    assert isinstance(load_run_config(), RunConfig)
