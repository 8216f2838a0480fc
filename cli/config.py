"""Hydra at the edge: compose ``conf/`` with command-line overrides into a RunConfig.

Hydra validates the composition against the structured schema (the dataclasses of
:mod:`fractofl.core.config.run_config`), so an unknown key fails; this module turns Hydra's
error into one that names the valid keys of the group. Open argument tables
(``model.args``, ``strategy.args``, ``data.synth.style``) are checked against the
registries they feed.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Sequence
from typing import Any, cast

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fractofl.cli.ray_cluster import (
    RayClusterError,
    RayTarget,
    check_ray_address,
    refuse_local_cpus_on_a_cluster,
)
from fractofl.client.attacks import attack_kinds
from fractofl.client.faults import FAULTS, fault_rounds
from fractofl.client.supernode_main import PollSettingError, check_poll_s, check_task_poll_s
from fractofl.core.config.run_config import (
    DATA_SOURCES,
    ENGINES,
    RunConfig,
    RunConfigError,
    check_retention,
)
from fractofl.core.config.taxonomy import validate_classes
from fractofl.core.images.partition import PARTITIONS
from fractofl.core.images.scale_policy import UNKNOWN_SCALE_POLICIES
from fractofl.core.learning.schedule import LR_SCHEDULES
from fractofl.core.learning.train_choices import (
    MIXED_PRECISION,
    PERSONALIZE_LAYERS,
    TRAINING_LOSSES,
)
from fractofl.core.synth.style import SynthStyle
from fractofl.core.wire.compression import CompressionSpec
from fractofl.server.heap import MAX_RETAIN_MB
from fractofl.strategies.aggregation_mode import AggregationSettingsError, streams_updates

CONFIG_MODULE = "fractofl.conf"
CONFIG_NAME = "config"
SCHEMA_NAME = "fractofl_schema"

ConfigStore.instance().store(name=SCHEMA_NAME, node=RunConfig)


class ConfigError(ValueError):
    """The composed configuration is invalid; the message says which key and why."""


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra overrides such as ``federation.rounds=20``."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return compose(config_name=CONFIG_NAME, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_explain(exc)) from None
    finally:
        GlobalHydra.instance().clear()


def to_run_config(cfg: DictConfig, training: bool = True) -> RunConfig:
    """Convert a composed config to the typed object and check it (``training=False``:
    leave out the model, strategy and augmentation checks, which import torch and Flower,
    for commands that train nothing: ``member add``, ``coordinator status`` ...)."""
    _reject_unknown_keys(cfg, RunConfig, "")
    run_config = cast(RunConfig, OmegaConf.to_object(cfg))
    validate_run_config(run_config, training)
    return run_config


def load_run_config(overrides: Sequence[str] = (), training: bool = True) -> RunConfig:
    """Compose and convert in one step."""
    return to_run_config(compose_config(overrides), training)


def validate_run_config(cfg: RunConfig, training: bool = True) -> None:
    """Check what the schema cannot: class names, registry names and their arguments."""
    try:
        validate_classes(cfg.data.classes)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if training:
        _check_training(cfg)
    _check_settings(cfg)


def _check_training(cfg: RunConfig) -> None:
    """The registries a run trains with: model, strategy, augmentation (imports torch and
    Flower, so only the commands that train ask for it)."""
    from fractofl.core.images.augmentation import AugmentationError, parse_augmentation
    from fractofl.core.model.architectures import build_model, get_spec, model_arguments
    from fractofl.strategies.registry import check_strategy_values, strategy_arguments

    try:
        get_spec(cfg.model.name)
        build_model(cfg.model.name, len(cfg.data.classes), **cfg.model.args)
        strategy_arguments(cfg.strategy.name)
        parse_augmentation(cfg.train.augment)
    except (KeyError, ValueError, TypeError, AugmentationError) as exc:
        raise ConfigError(str(exc)) from None
    _check_table("strategy.args", cfg.strategy.args, strategy_arguments(cfg.strategy.name))
    _check_table("model.args", cfg.model.args, model_arguments(cfg.model.name))
    try:
        check_strategy_values(cfg.strategy.name, dict(cfg.strategy.args))
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None


def _check_settings(cfg: RunConfig) -> None:
    """Every other setting's range and names."""
    _check_table(
        "data.synth.style", cfg.data.synth.style, [f.name for f in dataclasses.fields(SynthStyle)]
    )
    try:
        SynthStyle(**cfg.data.synth.style)
    except ValueError as exc:
        raise ConfigError(f"data.synth.style: {exc}") from None
    _check_data_source(cfg)
    try:
        check_retention(cfg.registry.retention)
    except RunConfigError as exc:
        raise ConfigError(str(exc)) from None
    if cfg.output.engine not in ENGINES:
        raise ConfigError(f"output.engine={cfg.output.engine!r}; valid: {', '.join(ENGINES)}")
    if cfg.data.partition not in PARTITIONS:
        raise ConfigError(f"data.partition={cfg.data.partition!r}; valid: {', '.join(PARTITIONS)}")
    try:
        CompressionSpec(cfg.updates.compression, cfg.updates.topk_fraction)
    except ValueError as exc:
        raise ConfigError(f"updates: {exc}") from None
    if cfg.updates.max_norm_multiple <= 0:
        raise ConfigError(f"updates.max_norm_multiple={cfg.updates.max_norm_multiple} must be > 0")
    if not 0 <= cfg.updates.retain_freed_mb <= MAX_RETAIN_MB:
        raise ConfigError(
            f"updates.retain_freed_mb={cfg.updates.retain_freed_mb} must be between 0 "
            f"(malloc's defaults) and {MAX_RETAIN_MB} (glibc's limit)"
        )
    try:
        check_poll_s(cfg.deployment.member_poll_s)
        check_task_poll_s(cfg.deployment.member_task_poll_s)
    except PollSettingError as exc:
        raise ConfigError(str(exc)) from None
    if cfg.updates.spill_min_free_mb < 0:
        raise ConfigError(f"updates.spill_min_free_mb={cfg.updates.spill_min_free_mb} must be >= 0")
    try:
        streams_updates(cfg)
    except AggregationSettingsError as exc:
        raise ConfigError(str(exc)) from None
    if cfg.federation.cross_site and (cfg.privacy.dp or cfg.privacy.secure_aggregation):
        raise ConfigError(
            "federation.cross_site sends each member's personalized model to the coordinator "
            "as it is, which privacy.dp and privacy.secure_aggregation exist to prevent; "
            "turn one off"
        )
    if not 0 < cfg.registry.ood_coverage <= 1 or not 0 <= cfg.serving.min_confidence <= 1:
        raise ConfigError(
            f"registry.ood_coverage={cfg.registry.ood_coverage} must be above 0 and at most 1, "
            f"serving.min_confidence={cfg.serving.min_confidence} between 0 and 1"
        )
    if cfg.train.lr_schedule not in LR_SCHEDULES or not 0 < cfg.train.lr_final_fraction <= 1:
        raise ConfigError(
            f"train.lr_schedule={cfg.train.lr_schedule!r} (valid: {', '.join(LR_SCHEDULES)}) "
            f"with train.lr_final_fraction={cfg.train.lr_final_fraction} (above 0, at most 1)"
        )
    if cfg.train.loss not in TRAINING_LOSSES:
        raise ConfigError(f"train.loss={cfg.train.loss!r}; valid: {', '.join(TRAINING_LOSSES)}")
    if not 0 < cfg.train.balanced_softmax_floor <= 1:
        raise ConfigError(
            f"train.balanced_softmax_floor={cfg.train.balanced_softmax_floor} must be above 0 "
            "and at most 1 (a class frequency; 0.01 measured best, README)"
        )
    if cfg.train.mixed_precision not in MIXED_PRECISION:
        raise ConfigError(
            f"train.mixed_precision={cfg.train.mixed_precision!r}; valid: "
            f"{', '.join(MIXED_PRECISION)}"
        )
    if cfg.train.personalize_epochs < 0 or cfg.train.personalize_lr <= 0:
        raise ConfigError(
            f"train.personalize_epochs={cfg.train.personalize_epochs} must be at least 0 and "
            f"train.personalize_lr={cfg.train.personalize_lr} above 0"
        )
    if cfg.train.personalize_layers not in PERSONALIZE_LAYERS:
        raise ConfigError(
            f"train.personalize_layers={cfg.train.personalize_layers!r}; valid: "
            f"{', '.join(PERSONALIZE_LAYERS)}"
        )
    fed = cfg.federation
    if not 0 <= fed.attackers <= fed.members:
        raise ConfigError(
            f"federation.attackers={fed.attackers}: must be between 0 and "
            f"federation.members={fed.members}"
        )
    try:
        attack_kinds(fed.attack, fed.attackers)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if fed.fault not in FAULTS or not 0 <= fed.attackers + fed.faulty_members <= fed.members:
        raise ConfigError(
            f"federation.fault={fed.fault!r} with faulty_members={fed.faulty_members}: the "
            f"fault must be one of {', '.join(FAULTS)}, and attackers + faulty_members at "
            f"most federation.members={fed.members}"
        )
    try:
        fault_rounds(fed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if fed.round_retries < 0 or fed.round_timeout <= 0:
        raise ConfigError(
            f"federation.round_retries={fed.round_retries} must be >= 0 and "
            f"federation.round_timeout={fed.round_timeout} > 0"
        )
    _check_ray_settings(cfg)
    if cfg.output.resume and not cfg.output.name:
        raise ConfigError(
            "output.resume=true needs output.name (the run folder to continue); or use "
            "`fractofl coordinator resume runs/<name>`"
        )
    if fed.min_train_members > fed.members:
        raise ConfigError(
            f"federation.min_train_members={fed.min_train_members} exceeds "
            f"federation.members={fed.members}: no round could ever start"
        )


def _check_ray_settings(cfg: RunConfig) -> None:
    """Per-member resources and the Ray cluster's address (``RAY_ADDRESS`` is checked
    when a simulation starts: it may differ there)."""
    fed = cfg.federation
    if fed.member_cpus <= 0 or fed.member_gpus < 0:
        raise ConfigError(
            f"federation.member_cpus={fed.member_cpus:g} must be > 0 and "
            f"federation.member_gpus={fed.member_gpus:g} >= 0 (cores and GPU share per member)"
        )
    if fed.local_cpus < 0:  # its type is the structured config's to enforce
        raise ConfigError(
            f"federation.local_cpus={fed.local_cpus!r} must be a whole number >= 0 (cores a "
            "local Ray instance may use; 0: all of this machine's)"
        )
    if 0 < fed.local_cpus < fed.member_cpus:
        raise ConfigError(
            f"federation.local_cpus={fed.local_cpus} holds no member: each needs "
            f"federation.member_cpus={fed.member_cpus:g}; raise local_cpus or lower member_cpus"
        )
    if fed.ray_connect_timeout_s <= 0:
        raise ConfigError(
            f"federation.ray_connect_timeout_s={fed.ray_connect_timeout_s:g} must be > 0 "
            "(seconds to wait for the Ray cluster's head)"
        )
    if fed.ray_address.strip():
        try:
            target = RayTarget(check_ray_address(fed.ray_address))
            refuse_local_cpus_on_a_cluster(fed.local_cpus, target)
        except RayClusterError as exc:
            raise ConfigError(str(exc)) from None


def _check_data_source(cfg: RunConfig) -> None:
    data = cfg.data
    if data.source not in DATA_SOURCES:
        raise ConfigError(f"data.source={data.source!r}; valid: {', '.join(DATA_SOURCES)}")
    if data.unknown_scale not in UNKNOWN_SCALE_POLICIES:
        raise ConfigError(
            f"data.unknown_scale={data.unknown_scale!r}; valid: {', '.join(UNKNOWN_SCALE_POLICIES)}"
        )
    if cfg.train.tiles_per_image < 1:
        raise ConfigError(f"train.tiles_per_image={cfg.train.tiles_per_image} must be at least 1")
    if cfg.model.pixel_size_um < 0:
        raise ConfigError(
            f"model.pixel_size_um={cfg.model.pixel_size_um} must be 0 (whole image) or the "
            "model's micrometres per pixel"
        )
    if cfg.model.tile_grid < 1:
        raise ConfigError(f"model.tile_grid={cfg.model.tile_grid} must be at least 1")
    if data.source == "folders" and not data.test_dir:
        raise ConfigError(
            "data=folders needs data.test_dir: the coordinator's test folder, one sub-folder "
            "per class, with images no member trains on"
        )
    if data.source == "folders" and not (data.root or data.member_dirs):
        raise ConfigError(
            "data=folders needs data.root (a folder whose sub-folders are the members) or "
            "data.member_dirs (the member folders themselves)"
        )


def _reject_unknown_keys(node: Any, schema: type, prefix: str) -> None:
    # ``+key=value`` appends past the struct schema; the typed object would drop it silently.
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key in node:
        full_key = f"{prefix}{key}"
        if key not in fields:
            parent = prefix.rstrip(".")
            where = f"in '{parent}'" if parent else "at the top level"
            raise ConfigError(
                f"unknown config key '{full_key}'; valid keys {where}: {', '.join(fields)}"
            )
        sub = _field_schema(fields[key])
        if sub is not None:
            _reject_unknown_keys(node[key], sub, f"{full_key}.")


def _field_schema(field: dataclasses.Field[Any]) -> type | None:
    if field.default_factory is dataclasses.MISSING:
        return None
    value = field.default_factory()
    return type(value) if dataclasses.is_dataclass(value) else None


def _check_table(key: str, table: dict[str, Any], valid: Sequence[str]) -> None:
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {key}; valid: {', '.join(valid) or 'none'}")


_FULL_KEY = re.compile(r"full_key: ([\w.]+)")


def _explain(exc: Exception) -> str:
    """Add the valid keys (and a close match) to Hydra's unknown-key error."""
    text = str(exc).strip()
    cause = str(exc.__cause__ or "")
    match = _FULL_KEY.search(cause) if "not in" in cause else None
    if not match:
        # e.g. "Error merging override k=1.5: Value '1.5' of type 'float' could not be
        # converted to Integer": say why, not only which override.
        reason = cause.splitlines()[0] if cause.strip() else ""
        return f"{text}: {reason}" if reason and reason not in text else text
    full_key = match.group(1)
    parent, _, leaf = full_key.rpartition(".")
    valid = _keys_at(parent)
    if not valid:  # an open table (model.args, ...): Hydra's own '+' hint is the right one
        return text
    hint = difflib.get_close_matches(leaf, valid, n=1)
    where = f"in '{parent}'" if parent else "at the top level"
    message = f"unknown config key '{full_key}'; valid keys {where}: {', '.join(valid)}"
    return message + (f" (did you mean '{hint[0]}'?)" if hint else "")


def _keys_at(dotted: str) -> list[str]:
    schema: type | None = RunConfig
    for part in filter(None, dotted.split(".")):
        fields = {f.name: f for f in dataclasses.fields(schema)} if schema else {}
        schema = _field_schema(fields[part]) if part in fields else None
    return [f.name for f in dataclasses.fields(schema)] if schema else []


def to_yaml(cfg: DictConfig) -> str:
    """The resolved configuration as YAML (what ``--cfg`` prints)."""
    return OmegaConf.to_yaml(cfg, resolve=True)
