"""Typed run configuration shared by the launcher, the ServerApp and the ClientApp.

Hydra composes these dataclasses (as structured-config schema) in the launcher; Flower
carries them to the apps as a *flat* mapping of scalars (``context.run_config`` allows
nothing else), and each app turns that mapping back into a :class:`RunConfig` once.
Lists travel as comma-separated strings, open argument tables as ``group.args.<key>``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fractofl.core.config.taxonomy import DEFAULT_CLASSES

Scalar = bool | int | float | str


class RunConfigError(ValueError):
    """A run configuration key is unknown, missing its group, or has the wrong type."""


@dataclass
class ModelConfig:
    """Which network to train; ``args`` go to the registered builder."""

    name: str = "small_cnn"
    image_size: int = 64
    pixel_size_um: float = 0.0  # > 0: images at this physical scale, cut into tiles
    tile_grid: int = 3  # evaluation and serving tiles per side (physical scale)
    pretrained_weights: str = ""
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class SynthConfig:
    """How the synthetic SEM data set is generated (see ``fractofl synth``)."""

    per_class: int = 300
    test_per_class: int = 100
    seed: int = 7
    style: dict[str, Any] = field(default_factory=dict)
    overwrite: bool = False  # replace a set made with other settings (never one's own images)
    instrument_shift: float = 0.0  # members' microscopes apart (0 alike .. 1 strong)


DATA_SOURCES = ("synthetic", "folders")


@dataclass
class DataConfig:
    """Where member and coordinator data live: a synthetic set (``source=synthetic``,
    generated under ``root`` when missing, split as ``partition`` says) or existing member
    folders (``source=folders``: the sub-folders of ``root``, or ``member_dirs``)."""

    source: str = "synthetic"
    root: str = "data/synthetic"
    member_dirs: list[str] = field(default_factory=list)
    test_dir: str = ""
    classes: list[str] = field(default_factory=lambda: list(DEFAULT_CLASSES))
    partition: str = "dirichlet"
    alpha: float = 0.5
    min_per_member: int = 8
    val_fraction: float = 0.15
    unknown_scale: str = "skip"  # physical-scale model, image of unknown scale: skip | as_is
    cache_dir: str = ""  # prepared images; "" = $XDG_CACHE_HOME/fractofl or ~/.cache/fractofl
    reference_dir: str = ""  # a consortium reference set every member trains on; "" = none
    synth: SynthConfig = field(default_factory=SynthConfig)


@dataclass
class TrainConfig:
    """Local training recipe of every member (and of the centralized baseline)."""

    local_epochs: int = 2
    batch_size: int = 32
    lr: float = 0.05
    lr_schedule: str = "constant"  # the coordinator's, over rounds: constant | cosine
    lr_final_fraction: float = 0.1  # cosine: the last round's lr = lr x this
    momentum: float = 0.9
    weight_decay: float = 5e-4
    loss: str = "cross_entropy"  # see fractofl.core.learning.loss
    balanced_softmax_floor: float = 0.01  # the smallest class frequency balanced softmax assumes
    augment: str = "fracture"  # see fractofl.core.images.augmentation
    device: str = "auto"
    mixed_precision: str = "auto"  # see fractofl.core.learning.precision
    threads: int = 1
    tiles_per_image: int = 4  # a physical-scale model's random training tiles per image
    personalize_epochs: int = 2  # `member personalize`: local fine-tuning of a global model
    personalize_lr: float = 0.01
    personalize_layers: str = "classifier"  # or all; see fractofl.client.personal.class_mix


@dataclass
class FederationConfig:
    """How many members, rounds and replies a run needs, and where simulated members
    run (``ray_address``: a Ray cluster's head; empty: ``RAY_ADDRESS`` or a local Ray)."""

    members: int = 4
    rounds: int = 5
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_train_members: int = 2
    min_evaluate_members: int = 2
    round_timeout: float = 600.0
    round_retries: int = 2
    member_cpus: float = 1.0
    member_gpus: float = 0.0
    local_cpus: int = 0  # cores a local Ray instance may use; 0: all of this machine's
    ray_address: str = ""  # host:port, "local", or empty (see fractofl.cli.ray_cluster)
    ray_connect_timeout_s: float = 15.0
    attackers: int = 0
    attack: str = "none"
    attack_scale: float = 10.0
    faulty_members: int = 0
    fault: str = "none"
    fault_rounds: str = ""
    cross_site: bool = False  # at the end: every member's personalized model, scored everywhere
    evaluate_with_training: bool = True
    """Members score the model a training instruction brings (the previous round's) and
    send the scores with their update: one exchange a round instead of two."""


@dataclass
class UpdatesConfig:
    """How members compress their updates and when the coordinator refuses one."""

    compression: str = "none"
    topk_fraction: float = 1.0
    max_norm_multiple: float = 5.0
    retain_freed_mb: int = 32
    aggregation: str = "auto"
    spill_dir: str = ""
    spill_min_free_mb: int = 1024
    pack_arrays: bool = True
    """Every message's arrays travel packed into one (:mod:`fractofl.core.wire.packing`)."""


@dataclass
class StrategyConfig:
    """Aggregation strategy by registry name; ``args`` go to its constructor."""

    name: str = "fedavg"
    args: dict[str, Any] = field(default_factory=dict)
    local_batchnorm: bool = False
    """FedBN: every member keeps its own BatchNorm layers and sends no change of them."""


BEST_MODES = ("max", "min")


@dataclass
class RetentionConfig:
    """Which registry versions are kept (``fractofl.core.trust.retention``): the newest
    ``keep_last`` (0: every version), the best by ``best_metric`` (``best_mode`` max or
    min; empty: none), and every version in use; pruned after each publish when
    ``prune_after_publish``, and by ``fractofl models prune``."""

    keep_last: int = 10
    best_metric: str = "test_macro_f1"
    best_mode: str = "max"
    prune_after_publish: bool = True


def check_retention(retention: RetentionConfig) -> None:
    """Raise :class:`RunConfigError` naming the ``registry.retention`` setting at fault."""
    keep_last = retention.keep_last
    if not isinstance(keep_last, int) or isinstance(keep_last, bool) or keep_last < 0:
        raise RunConfigError(
            f"registry.retention.keep_last={keep_last!r} must be a whole number >= 0 "
            "(the newest versions to keep; 0 keeps every version)"
        )
    if not isinstance(retention.best_metric, str):
        raise RunConfigError(
            f"registry.retention.best_metric={retention.best_metric!r} must be a metric "
            "name such as test_macro_f1, or empty to keep no best version"
        )
    if retention.best_mode not in BEST_MODES:
        raise RunConfigError(
            f"registry.retention.best_mode={retention.best_mode!r}; valid: "
            f"{', '.join(BEST_MODES)} (max: higher is better, min: e.g. a loss)"
        )
    if not isinstance(retention.prune_after_publish, bool):
        raise RunConfigError(
            f"registry.retention.prune_after_publish={retention.prune_after_publish!r} "
            "must be true or false"
        )


@dataclass
class RegistryConfig:
    """Where published model versions live, which keys sign and verify them, and which
    versions are kept."""

    root: str = "registry"
    private_key: str = "keys/coordinator.key"
    public_key: str = "keys/coordinator.pub"
    trusted_public_key: str = "keys/coordinator.pub"
    passphrase_env: str = "FRACTOFL_KEY_PASSPHRASE"
    create_key_if_missing: bool = True
    ood_coverage: float = 0.95  # share of the test images under the signed OOD threshold
    retention: RetentionConfig = field(default_factory=RetentionConfig)


@dataclass
class ServingConfig:
    """How a model version is packaged, served locally and deployed on SageMaker."""

    # Packaging and the local endpoint (SageMaker's container contract).
    artifacts: str = "artifacts"
    host: str = "127.0.0.1"
    port: int = 8080
    endpoint_name: str = "fractofl"
    max_payload_mb: float = 6.0
    min_confidence: float = 0.5  # a calibrated top probability below it: "uncertain"
    max_concurrent: int = 8
    max_queue_wait_s: float = 30.0
    max_batch: int = 8
    max_batch_wait_ms: float = 0.0
    request_timeout_s: float = 60.0
    keep_alive_s: float = 5.0
    max_connections: int = 64
    listen_backlog: int = 128
    max_image_pixels: int = 25_000_000
    max_image_side: int = 16384
    max_aspect_ratio: float = 16.0
    api_key_env: str = "FRACTOFL_API_KEY"
    rate_limit_per_minute: float = 120.0
    rate_limit_burst: int = 20
    web_page: bool = True
    # SageMaker (deploy, update, delete).
    region: str = "eu-central-1"
    bucket: str = ""
    prefix: str = "fractofl/models"
    role_arn: str = ""
    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    autoscaling_min_instances: int = 1
    autoscaling_max_instances: int = 1  # > min: target tracking on invocations per instance
    autoscaling_target_invocations: float = 70.0
    autoscaling_target_backlog: float = 5.0  # an asynchronous endpoint's queue per instance
    autoscaling_scale_in_cooldown_s: float = 300.0
    autoscaling_scale_out_cooldown_s: float = 60.0
    framework_version: str = "2.6"
    py_version: str = "py312"
    kms_key_id: str = ""
    subnets: list[str] = field(default_factory=list)
    security_groups: list[str] = field(default_factory=list)
    data_capture: bool = False
    data_capture_s3_uri: str = ""
    data_capture_percent: int = 100
    wait_timeout_s: float = 1800.0
    multipart_threshold_mb: int = 64
    # SageMaker Asynchronous Inference (`serve deploy --async`, `predict --async`).
    async_input_path: str = ""  # "": s3://<bucket>/<prefix>/async/input
    async_output_path: str = ""  # "": s3://<bucket>/<prefix>/async/output
    async_failure_path: str = ""  # "": s3://<bucket>/<prefix>/async/failure
    async_max_concurrent_per_instance: int = 0  # 0: SageMaker chooses
    async_timeout_s: float = 900.0
    async_poll_s: float = 2.0


@dataclass
class PrivacyConfig:
    """Differential privacy: members clip their update to ``clipping_norm``, the
    coordinator adds Gaussian noise (``noise_multiplier`` x norm / members) and Flower's
    RDP accountant reports (epsilon, ``target_delta``) after every round. Secure
    aggregation: Flower's SecAgg+, so the coordinator learns only the sum of the updates."""

    dp: bool = False
    noise_multiplier: float = 1.0
    clipping_norm: float = 1.0
    target_delta: float = 1e-5
    max_epsilon: float = 0.0
    secure_aggregation: bool = False
    secagg_num_shares: int = 3
    secagg_reconstruction_threshold: int = 2
    secagg_clipping_range: float = 8.0
    secagg_quantization_range: int = 4194304
    secagg_max_weight: float = 1000.0


@dataclass
class DeploymentConfig:
    """A real federation on Flower's Deployment Engine: the consortium CA, the
    coordinator's SuperLink and the members' SuperNodes (``fractofl ca|coordinator|member``)."""

    pki_dir: str = "pki"
    ca_name: str = "fractofl consortium CA"
    ca_days: int = 3650
    certificate_days: int = 825
    hosts: list[str] = field(default_factory=lambda: ["localhost", "127.0.0.1"])
    # The front (nginx) on the public address forwards only the Fleet API to the SuperLink.
    front_host: str = "0.0.0.0"
    front_port: int = 9092
    front_max_body_mb: int = 64
    front_timeout_s: float = 120.0
    nginx: str = "nginx"
    # The SuperLink itself, on a private loopback port behind the front.
    superlink_host: str = "127.0.0.1"
    superlink_port: int = 9093
    # Flower's state and message store: "file" (SQLite in state_dir) or "memory".
    superlink_store: str = "file"
    state_dir: str = "coordinator"
    member_dir: str = "member"
    # How often a member's idle SuperNode asks for work (Flower's own wait is 3 s).
    member_poll_s: float = 0.5
    # How often its SuperExec asks the SuperNode for a ClientApp to start (Flower's: 1 s).
    member_task_poll_s: float = 0.1
    connect_timeout_s: float = 120.0


ENGINES = ("simulation", "deployment")


@dataclass
class OutputConfig:
    """Where run folders are written; ``resume`` continues the run already there;
    ``engine`` records which of Flower's engines ran it (set by the launcher), so that
    ``fractofl coordinator resume`` continues it the same way."""

    root: str = "runs"
    name: str = ""
    resume: bool = False
    engine: str = "simulation"


@dataclass
class RunConfig:
    """Everything one federated (or centralized) run needs."""

    seed: int = 42
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    updates: UpdatesConfig = field(default_factory=UpdatesConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    deployment: DeploymentConfig = field(default_factory=DeploymentConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


def to_flat(config: RunConfig) -> dict[str, Scalar]:
    """Flatten a run config into dotted keys with scalar values (Flower's run config)."""
    flat: dict[str, Scalar] = {}
    _flatten(dataclasses.asdict(config), "", flat)
    return flat


def _flatten(node: Mapping[str, Any], prefix: str, out: dict[str, Scalar]) -> None:
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _flatten(value, f"{name}.", out)
        elif isinstance(value, list | tuple):
            out[name] = ",".join(str(v) for v in value)
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        else:
            raise RunConfigError(f"{name}={value!r}: only scalars and lists can be flattened")


def from_flat(flat: Mapping[str, Any]) -> RunConfig:
    """Rebuild a :class:`RunConfig` from dotted keys, failing on unknown keys.

    Keys that are absent keep their defaults, so a partial ``[tool.flwr.app.config]``
    still works; an unknown key raises with the valid keys of its group listed.
    """
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = str(key).split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RunConfigError(f"run config key {key!r} nests under a scalar")
        node[leaf] = value
    return typing.cast(RunConfig, _build(RunConfig, nested, ""))


def from_nested(values: Mapping[str, Any]) -> RunConfig:
    """Rebuild a :class:`RunConfig` from nested mappings (e.g. a run folder's
    ``config.yaml``); absent keys keep their defaults, unknown keys fail."""
    return typing.cast(RunConfig, _build(RunConfig, values, ""))


def _build(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        valid = ", ".join(f"{prefix}{n}" for n in names)
        raise RunConfigError(
            f"unknown run config key(s) {[prefix + u for u in unknown]}; valid keys here: {valid}"
        )
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise RunConfigError(f"{key} is a group; set {key}.<field>, not {key}={value!r}")
        return _build(typing.cast(type, hint), value, f"{key}.")
    if origin is dict:
        if not isinstance(value, Mapping):
            raise RunConfigError(f"{key} is a table; set {key}.<name>, not {key}={value!r}")
        return dict(value)
    if origin is list:
        items = value.split(",") if isinstance(value, str) else list(value)
        return [str(v).strip() for v in items if str(v).strip()]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        return str(value)
    raise RunConfigError(f"{key}={value!r} should be of type {getattr(hint, '__name__', hint)}")


UNHASHED_GROUPS = ("output.", "registry.", "serving.", "deployment.")
# Where simulated members run, how the coordinator holds a round's updates and how the
# arrays travel, not what is trained: a run on a Ray cluster, or streamed, or packed, has
# the digest of the same run on one machine, gathered, unpacked, and can be resumed on
# another cluster or with the other setting.
UNHASHED_KEYS = (
    "federation.local_cpus",
    "federation.ray_address",
    "federation.ray_connect_timeout_s",
    "updates.aggregation",
    "updates.spill_dir",
    "updates.spill_min_free_mb",
    "updates.pack_arrays",
)


def config_digest(config: RunConfig) -> str:
    """Short stable hash of what a run trains (the ``output``, ``registry``, ``serving``
    and ``deployment`` groups and :data:`UNHASHED_KEYS` are left out), to show that two
    processes saw the same config."""
    flat = {
        k: v
        for k, v in to_flat(config).items()
        if not k.startswith(UNHASHED_GROUPS) and k not in UNHASHED_KEYS
    }
    payload = json.dumps(flat, sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()[:12]


def config_crc(config: RunConfig) -> int:
    """:func:`config_digest` as a CRC-32: a Flower MetricRecord holds numbers only, so
    members report it in this form and the coordinator compares it with its own."""
    return zlib.crc32(config_digest(config).encode())
