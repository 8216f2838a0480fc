"""The centralized baseline: the same model trained on the union of the members' data.

It gets the federated run's budget (``rounds x local_epochs`` epochs) and is scored on
the same coordinator test set after every ``local_epochs`` epochs, so its metrics file
lines up round by round with a federated run's.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from fractofl.core.config.run_config import RunConfig
from fractofl.core.images.cached_images import CachedImages
from fractofl.core.images.labelled import make_loader
from fractofl.core.learning.device import resolve_device, seed_everything
from fractofl.core.learning.loss import logit_offset
from fractofl.core.learning.member_data import (
    load_member_data,
    reference_dir,
    run_reference_set,
)
from fractofl.core.learning.precision import precision_for
from fractofl.core.learning.schedule import round_lr
from fractofl.core.learning.training import train
from fractofl.core.model.factory import augmentation_for, model_for
from fractofl.server.evaluation import CoordinatorEvaluator
from fractofl.server.recorder import RoundRow
from fractofl.server.run_folder import RunFolder

log = logging.getLogger("fractofl")


def pooled_training_data(member_dirs: Sequence[Path], cfg: RunConfig) -> CachedImages:
    """The members' training splits put together (their validation splits stay out), and
    the reference set once when the run has one (each member trains on it)."""
    parts = [load_member_data(d, cfg).train for d in member_dirs]
    reference = run_reference_set(cfg)
    if reference is not None:
        parts.append(reference)
    return CachedImages.concat(parts)


def run_centralized(cfg: RunConfig, member_dirs: Sequence[Path]) -> Path:
    """Train on the pooled data and write a run folder like a federated run's."""
    seed_everything(cfg.seed)
    data = pooled_training_data(member_dirs, cfg)
    model = model_for(cfg)
    evaluator = CoordinatorEvaluator(cfg, model_for(cfg))
    device = resolve_device(cfg.train.device)
    precision = precision_for(cfg.train.mixed_precision, device)  # refused before a folder
    offset = logit_offset(
        cfg.train.loss, data.class_counts(len(cfg.data.classes)), cfg.train.balanced_softmax_floor
    )
    folder = RunFolder.create(cfg, uuid.uuid4().hex[:8], kind="centralized")
    log.info(
        "centralized baseline on %d images from %d members%s",
        len(data),
        len(member_dirs),
        "" if reference_dir(cfg) is None else f" and the reference set {cfg.data.reference_dir}",
    )
    augmentation = augmentation_for(cfg)
    started = time.monotonic()
    rows: list[RoundRow] = []
    last = None
    for server_round in range(cfg.federation.rounds + 1):
        train_loss = math.nan
        if server_round:
            loader = make_loader(
                data.for_training(cfg.train.tiles_per_image),
                cfg.train.batch_size,
                True,
                augmentation,
                cfg.seed + server_round,
            )
            train_loss = train(
                model,
                loader,
                cfg.train.local_epochs,
                round_lr(cfg.train, server_round, cfg.federation.rounds),
                cfg.train.momentum,
                cfg.train.weight_decay,
                device,
                precision=precision,
                logit_offset=offset,
            ).loss
        last = evaluator.evaluate_state(model.state_dict())
        rows.append(
            RoundRow(
                round=server_round,
                members_answered=len(member_dirs) if server_round else 0,
                mean_train_loss=train_loss,
                test_accuracy=last.accuracy,
                test_macro_f1=last.macro_f1,
                test_loss=last.loss,
                member_val_accuracy=math.nan,
                config_mismatches=0,
                refused_updates=0,
                bytes_per_member=math.nan,
                elapsed_s=time.monotonic() - started,
            )
        )
        folder.record_round(rows, rows[-1])
    assert last is not None
    folder.finish(model, rows, last)
    return folder.path
