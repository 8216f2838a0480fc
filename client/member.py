"""A member's side of a round, without Flower: find its data, train, evaluate.

The data folder comes from the node config (``data-dir``) on a real member; a virtual
member in simulation has only a ``partition-id`` and uses that entry of
``data.member_dirs`` (``data=folders``) or the synthetic set's tree for that partition,
so one ClientApp serves both. A folder that is not there fails with the machine (and
Ray node) the member runs on: on a Ray cluster a member may run on any node.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.supercore.differential_privacy import clip_inputs_inplace, get_norm
from torch import nn

from fractofl.client.node_config import (
    CACHE_DIR_KEY,
    DATA_DIR_KEY,
    PARTITION_KEY,
    REFERENCE_DIR_KEY,
)
from fractofl.core.config.run_config import RunConfig
from fractofl.core.images.labelled import make_loader
from fractofl.core.learning.device import resolve_device
from fractofl.core.learning.loss import logit_offset
from fractofl.core.learning.member_data import (
    MemberData,
    cache_root_for,
    default_cache_root,
    reference_dir,
)
from fractofl.core.learning.metrics import precision_recall_f1
from fractofl.core.learning.precision import precision_for
from fractofl.core.learning.training import EvalResult, TrainResult, evaluate, train
from fractofl.core.model.factory import augmentation_for
from fractofl.core.synth.dataset import member_dir
from fractofl.core.wire.member_evaluation import MemberEvaluation


class MemberConfigError(ValueError):
    """The member's node config says neither where its data is nor which partition it is."""


def resolve_data_dir(node_config: Mapping[str, Any], cfg: RunConfig) -> Path:
    """The member's ImageFolder root, from its node config."""
    if DATA_DIR_KEY in node_config:
        return Path(str(node_config[DATA_DIR_KEY])).expanduser()
    if PARTITION_KEY in node_config:
        partition = int(node_config[PARTITION_KEY])
        if cfg.data.member_dirs:  # data=folders: the launcher listed the member folders
            return Path(cfg.data.member_dirs[partition])
        return member_dir(Path(cfg.data.root), partition)
    raise MemberConfigError(
        f"node config has neither '{DATA_DIR_KEY}' nor '{PARTITION_KEY}'; start the member "
        f"with --node-config '{DATA_DIR_KEY}=\"/path/to/images\"'"
    )


def member_cache_dir(node_config: Mapping[str, Any], cfg: RunConfig) -> Path:
    """Where the member prepares its images once: its node config's ``cache-dir``; a real
    member without one uses the user's cache folder, never a folder the run's config (the
    coordinator) names; a simulated member uses ``data.cache_dir``."""
    if CACHE_DIR_KEY in node_config:
        return Path(str(node_config[CACHE_DIR_KEY])).expanduser()
    if DATA_DIR_KEY in node_config:
        return default_cache_root()
    return cache_root_for(cfg)


def member_reference_dir(node_config: Mapping[str, Any], cfg: RunConfig) -> Path | None:
    """The consortium reference set this member trains on, or None: a real member's node
    config ``reference-dir`` (its own copy; never a folder the coordinator's config
    names); a simulated member's ``data.reference_dir``."""
    if REFERENCE_DIR_KEY in node_config:
        return Path(str(node_config[REFERENCE_DIR_KEY])).expanduser()
    if DATA_DIR_KEY in node_config:
        return None
    return reference_dir(cfg)


class MemberDataMissingError(FileNotFoundError):
    """A member's data folder is not on the machine (or Ray node) the member runs on."""


def running_on() -> str:
    """This machine's name, and the Ray node's id and address when the member runs in a
    Ray worker (a simulated member; Ray is never imported here for a real member)."""
    where = f"host {socket.gethostname()}"
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        node_id = ray.get_runtime_context().get_node_id()
        where += f", Ray node {node_id[:12]} ({ray.util.get_node_ip_address()})"
    return where


def member_data_dir(node_config: Mapping[str, Any], cfg: RunConfig) -> Path:
    """:func:`resolve_data_dir`, checked: MemberDataMissingError naming the folder, this
    node and what to do when it is not there."""
    path = resolve_data_dir(node_config, cfg)
    if path.is_dir():
        return path
    if DATA_DIR_KEY in node_config:
        hint = f"start the member with --node-config '{DATA_DIR_KEY}=\"/path/to/images\"'"
    else:
        hint = (
            "on a Ray cluster (federation.ray_address) every node needs every member's "
            "folder at this path: a shared folder, or `fractofl synth` with the run's "
            "settings on each node"
        )
    raise MemberDataMissingError(f"member data folder {path} is not on {running_on()}; {hint}")


def train_locally(
    model: nn.Module,
    data: MemberData,
    cfg: RunConfig,
    seed: int,
    proximal_mu: float = 0.0,
    trained_part: nn.Module | None = None,
) -> TrainResult:
    """Run the configured local epochs on the member's training split (``proximal_mu``:
    FedProx's term, sent by the coordinator; ``trained_part``: the only part of ``model``
    that learns, see :func:`fractofl.core.learning.training.train`)."""
    torch.set_num_threads(max(1, cfg.train.threads))
    torch.manual_seed(seed)
    samples = data.train.for_training(cfg.train.tiles_per_image)
    loader = make_loader(samples, cfg.train.batch_size, True, augmentation_for(cfg), seed)
    device = resolve_device(cfg.train.device)
    offset = logit_offset(
        cfg.train.loss,
        data.train.class_counts(len(cfg.data.classes)),
        cfg.train.balanced_softmax_floor,
    )
    return train(
        model,
        loader,
        epochs=cfg.train.local_epochs,
        lr=cfg.train.lr,
        momentum=cfg.train.momentum,
        weight_decay=cfg.train.weight_decay,
        device=device,
        proximal_mu=proximal_mu,
        precision=precision_for(cfg.train.mixed_precision, device),
        logit_offset=offset,
        trained_part=trained_part,
    )


def state_as_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's state_dict as numpy arrays (CPU copies)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def weight_delta(
    trained: dict[str, np.ndarray], start: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Trained minus starting weights: float tensors as float32, counters exactly."""
    # np.asarray: arithmetic on 0-d arrays returns numpy scalars, which Flower refuses.
    return {
        key: np.asarray(
            trained[key].astype(np.float32) - start[key].astype(np.float32)
            if np.issubdtype(start[key].dtype, np.floating)
            else trained[key] - start[key]
        )
        for key in start
    }


def evaluate_locally(model: nn.Module, data: MemberData, cfg: RunConfig) -> EvalResult | None:
    """Evaluate on the member's validation split (None when it has none), with
    ``train.threads`` torch threads as in training: a deployed member's ClientApp is a
    process of its own, and torch's default (every core) beside the other members' on the
    same cores burns CPU waiting."""
    if len(data.val) == 0:
        return None
    torch.set_num_threads(max(1, cfg.train.threads))
    loader = make_loader(data.val, cfg.train.batch_size, False, None, cfg.seed)
    return evaluate(model, loader, len(cfg.data.classes), resolve_device(cfg.train.device))


def validation_gaps(data: MemberData, classes: Sequence[str]) -> str | None:
    """Why this member's evaluation says little (no validation images, or classes with
    none), with what to do; None when every class has validation images."""
    counts = data.val.class_counts(len(classes))
    missing = [name for name, n in zip(classes, counts, strict=True) if n == 0]
    if not missing:
        return None
    if len(missing) == len(classes):
        return (
            "this member has no validation images, so it reports no scores of the global "
            "model; add images (data.val_fraction of them are held out)"
        )
    return (
        f"this member's {sum(counts)} validation image(s) hold no {', '.join(missing)}: "
        "its recall of those classes is not reported; add images of them"
    )


def member_evaluation(result: EvalResult) -> MemberEvaluation:
    """What a member reports of ``result``: its scores, and recall and validation images
    per class (a class without validation images has no recall)."""
    _, recall, _ = precision_recall_f1(result.confusion)
    counts = tuple(int(n) for n in result.confusion.sum(axis=1))
    return MemberEvaluation(
        examples=result.examples,
        loss=result.loss,
        accuracy=result.accuracy,
        macro_f1=result.macro_f1,
        recall=tuple(float(r) if n else None for r, n in zip(recall, counts, strict=True)),
        counts=counts,
        partition=None,
    )


def clip_update(delta: dict[str, np.ndarray], clipping_norm: float) -> float:
    """Differential privacy's member side, in place: integer buffers' changes (BatchNorm's
    batch counters) are zeroed, and the floating-point arrays together are scaled to L2
    norm at most ``clipping_norm`` with Flower's ``clip_inputs_inplace``. Returns the
    norm before clipping."""
    floats = []
    for value in delta.values():
        if np.issubdtype(value.dtype, np.floating):
            floats.append(value)
        else:
            value[...] = 0
    norm = get_norm(floats)
    if norm > 0:  # Flower's clip divides by the norm
        clip_inputs_inplace(floats, clipping_norm)
    return norm
