"""The member's Flower ClientApp: thin wiring from Flower messages to plain functions."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import cast

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from torch import nn

from fractofl.client.attacks import attack_kinds, corrupt_update
from fractofl.client.audit import audit_mod
from fractofl.client.faults import inject_fault
from fractofl.client.local_batchnorm import (
    keep_local_batchnorm,
    restore_local_batchnorm,
    without_batchnorm_change,
)
from fractofl.client.member import (
    clip_update,
    evaluate_locally,
    member_cache_dir,
    member_data_dir,
    member_evaluation,
    member_reference_dir,
    state_as_numpy,
    train_locally,
    validation_gaps,
    weight_delta,
)
from fractofl.client.node_config import PARTITION_KEY
from fractofl.client.packed_messages import packed_messages_mod
from fractofl.client.personal.class_mix import run_floor
from fractofl.client.personal.local_models import member_trainer, personalize
from fractofl.client.policy import policy_mod
from fractofl.client.secure_reply import (
    is_secure_instruction,
    read_instruction,
    secure_aggregation_mod,
    secure_reply,
)
from fractofl.core.config.run_config import RunConfig, config_crc, from_flat
from fractofl.core.learning.member_data import MemberData, load_member_data
from fractofl.core.model.architectures import batchnorm_keys
from fractofl.core.model.factory import model_for
from fractofl.core.wire.compression import encode_update
from fractofl.core.wire.member_evaluation import evaluation_metrics
from fractofl.core.wire.update_protocol import (
    ARRAYS_KEY,
    CLIPPING_NORM_KEY,
    CONFIG_CRC_KEY,
    CONFIG_KEY,
    CROSS_SITE_MESSAGE,
    EVALUATE_RECEIVED_KEY,
    EVALUATION_KEY,
    EXAMPLES_KEY,
    LEARNING_RATE_KEY,
    METRICS_KEY,
    PERSONALIZE_MESSAGE,
    PROXIMAL_MU_KEY,
    REFERENCE_SET_KEY,
    SERVER_ROUND_KEY,
    UNIT_WEIGHT_KEY,
    spec_from_config,
)

# Packed arrays are read back first and packed again last (they are the same arrays); the
# audit mod wraps everything else, so it records exactly what leaves, array by array
# (refusals too); the member's policy comes next, before any of the instruction is acted on.
log = logging.getLogger("fractofl")

app = ClientApp(mods=[packed_messages_mod, audit_mod, policy_mod])
# Flower routes "<category>.<action>" to the function registered for that action.
PERSONALIZE_ACTION = PERSONALIZE_MESSAGE.split(".")[1]
CROSS_SITE_ACTION = CROSS_SITE_MESSAGE.split(".")[1]
WARNED_KEY = "fractofl.warned"  # the run Context's record of the last warning said


def _run_config(context: Context) -> RunConfig:
    return from_flat(context.run_config)


def _member_seed(cfg: RunConfig, data: MemberData, server_round: int) -> int:
    # From what the member's folder holds, not from a partition id or a node id: the same
    # folder trains with the same seed in a simulation and in a deployment.
    return (cfg.seed * 1_000_003 + server_round * 10_007 + data.identity) % 2**31


def _member(context: Context) -> tuple[RunConfig, MemberData, nn.Module]:
    """The run config, this member's data, and a fresh model of the run's architecture."""
    cfg = _run_config(context)
    node = context.node_config
    data = load_member_data(
        member_data_dir(node, cfg),
        cfg,
        member_cache_dir(node, cfg),
        member_reference_dir(node, cfg),
    )
    return cfg, data, model_for(cfg)


def _simulated_attack(
    delta: dict[str, np.ndarray], cfg: RunConfig, context: Context, seed: int, model: nn.Module
) -> dict[str, np.ndarray]:
    # Only a simulated member (it has a partition id) may play a Byzantine one.
    partition = context.node_config.get(PARTITION_KEY)
    if partition is None or int(partition) >= cfg.federation.attackers:
        return delta
    fed = cfg.federation
    attack = attack_kinds(fed.attack, fed.attackers)[int(partition)]
    statistics = frozenset(name for name, _ in model.named_buffers())
    rng = np.random.default_rng(seed)
    return corrupt_update(delta, attack, fed.attack_scale, rng, keep=statistics)


@app.train(mods=[secure_aggregation_mod])
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on this member's images; reply with the
    compressed change of the weights (under secure aggregation: the change, which
    Flower's ``secaggplus_mod`` masks). When the instruction asks for it
    (``federation.evaluate_with_training``), the reply also carries the received model's
    scores on this member's validation split, taken before training. Only weights and
    metrics leave the member."""
    cfg, data, model = _member(context)
    config: Mapping[str, object]
    secure = is_secure_instruction(msg)
    if secure:
        state, config = read_instruction(msg, list(model.state_dict()))
    else:
        state = msg.content.array_records[ARRAYS_KEY].to_torch_state_dict()
        config = msg.content.config_records[CONFIG_KEY]
    model.load_state_dict(state)
    local_batchnorm = cfg.strategy.local_batchnorm
    if local_batchnorm:  # FedBN: this member's own BatchNorm layers, kept from its last round
        restore_local_batchnorm(model, context.state)
    # federation.evaluate_with_training: the received model's scores, before it trains
    asked = config.get(EVALUATE_RECEIVED_KEY) and not secure
    scores = _scores(context, cfg, data, model) if asked else None
    delta, values = _local_update(cfg, data, model, config, context)
    if local_batchnorm:
        without_batchnorm_change(delta, batchnorm_keys(model))
        keep_local_batchnorm(model, context.state)
    if secure:
        return secure_reply(msg, delta, len(data.train), values, cfg.privacy)
    payload = encode_update(delta, spec_from_config(config))
    update = ArrayRecord({key: Array(value) for key, value in payload.items()})
    content = RecordDict({ARRAYS_KEY: update, METRICS_KEY: MetricRecord(dict(values))})
    if scores is not None:
        content[EVALUATION_KEY] = scores
    return Message(content=content, reply_to=msg)


def _local_update(
    cfg: RunConfig,
    data: MemberData,
    model: nn.Module,
    config: Mapping[str, object],
    context: Context,
) -> tuple[dict[str, np.ndarray], dict[str, int | float]]:
    """One round of local training: the change of the weights and the reply's metrics."""
    server_round = int(cast(int, config.get(SERVER_ROUND_KEY, 0)))
    inject_fault(cfg.federation, context.node_config, server_round)
    seed = _member_seed(cfg, data, server_round)
    start = state_as_numpy(model)
    mu = float(cast(float, config.get(PROXIMAL_MU_KEY, 0.0)))
    run_crc = config_crc(cfg)  # the run's configuration, before this round's rate
    scheduled = config.get(LEARNING_RATE_KEY)
    if isinstance(scheduled, int | float):  # the coordinator's train.lr_schedule
        cfg = replace(cfg, train=replace(cfg.train, lr=float(scheduled)))
    result = train_locally(model, data, cfg, seed=seed, proximal_mu=mu)
    delta = weight_delta(state_as_numpy(model), start)
    delta = _simulated_attack(delta, cfg, context, seed, model)
    values: dict[str, int | float] = {
        EXAMPLES_KEY: len(data.train),
        "train-loss": result.loss,
        "train-accuracy": result.accuracy,
        CONFIG_CRC_KEY: run_crc,
    }
    if data.reference_images:  # which copy: the coordinator sees members whose copies differ
        values[REFERENCE_SET_KEY] = data.reference_identity
    clipping_norm = config.get(CLIPPING_NORM_KEY)
    if isinstance(clipping_norm, int | float):  # differential privacy: bound our influence
        clip_update(delta, float(clipping_norm))
        values[UNIT_WEIGHT_KEY] = 1
    return delta, values


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on this member's validation split; reply with
    its scores and recall per class (:mod:`fractofl.core.wire.member_evaluation`). The
    same keys in every reply (Flower checks that), zero weight without a split."""
    cfg, data, model = _member(context)
    model.load_state_dict(msg.content.array_records[ARRAYS_KEY].to_torch_state_dict())
    if cfg.strategy.local_batchnorm:  # FedBN: scored with the member's own BatchNorm layers
        restore_local_batchnorm(model, context.state)
    return _scores_reply(msg, context, cfg, data, model)


def warn_once_per_run(context: Context, warning: str) -> None:
    """Log ``warning`` unless this member already logged it in this run. The run's
    Context (Flower keeps it per run and node, across the per-message processes of a
    deployment) remembers the last one, so a warning that holds every round is said once,
    and a changed one (the member's folder changed) is said again."""
    said = context.state.config_records.get(WARNED_KEY)
    if said is not None and said.get("text") == warning:
        return
    log.warning("%s", warning)
    context.state.config_records[WARNED_KEY] = ConfigRecord({"text": warning})


def _scores_reply(
    msg: Message, context: Context, cfg: RunConfig, data: MemberData, model: nn.Module
) -> Message:
    """A reply with ``model``'s scores on this member's validation split."""
    scores = _scores(context, cfg, data, model)
    return Message(content=RecordDict({METRICS_KEY: scores}), reply_to=msg)


def _scores(context: Context, cfg: RunConfig, data: MemberData, model: nn.Module) -> MetricRecord:
    """``model``'s scores on this member's validation split, as an evaluation reply
    carries them (:mod:`fractofl.core.wire.member_evaluation`)."""
    result = evaluate_locally(model, data, cfg)
    gaps = validation_gaps(data, cfg.data.classes)
    if gaps is not None:
        warn_once_per_run(context, gaps)
    partition = context.node_config.get(PARTITION_KEY)  # a simulated member names it
    values = evaluation_metrics(
        None if result is None else member_evaluation(result),
        len(cfg.data.classes),
        None if partition is None else int(partition),
    )
    return MetricRecord(values)


@app.train(PERSONALIZE_ACTION)
def personalize_for_cross_site(msg: Message, context: Context) -> Message:
    """(``federation.cross_site``) Personalize the final global model on this member's
    training split (its class mix, then fine-tuning: ``train.personalize_*``) and reply
    with the personalized weights and their scores on its validation split. The weights
    leave the member, and with them its class mix: the run must ask for it, and the
    member's policy can refuse (``share_personal_model: false``)."""
    cfg, data, model = _member(context)
    after_last_round = cfg.federation.rounds + 1
    inject_fault(cfg.federation, context.node_config, after_last_round)
    model.load_state_dict(msg.content.array_records[ARRAYS_KEY].to_torch_state_dict())
    if cfg.strategy.local_batchnorm:  # FedBN: its own BatchNorm layers are part of it
        restore_local_batchnorm(model, context.state)
    seed = _member_seed(cfg, data, after_last_round)
    counts = data.own_class_counts(len(cfg.data.classes))
    personalize(model, cfg, member_trainer(data, cfg), seed, counts, run_floor(cfg.train))
    reply = _scores_reply(msg, context, cfg, data, model)
    reply.content[ARRAYS_KEY] = ArrayRecord(model.state_dict())
    return reply


@app.evaluate(CROSS_SITE_ACTION)
def evaluate_for_cross_site(msg: Message, context: Context) -> Message:
    """(``federation.cross_site``) Score the received model (the global one or a member's
    personalized one) as it is on this member's validation split."""
    cfg, data, model = _member(context)
    inject_fault(cfg.federation, context.node_config, cfg.federation.rounds + 1)
    model.load_state_dict(msg.content.array_records[ARRAYS_KEY].to_torch_state_dict())
    return _scores_reply(msg, context, cfg, data, model)
