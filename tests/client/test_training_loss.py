"""``train.loss`` on a member: the federation's training uses it, the member's own
models (local-only baseline, personalized) never do."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fractofl.client.member import state_as_numpy, train_locally
from fractofl.client.personal.local_models import member_trainer
from fractofl.core.config.run_config import RunConfig
from fractofl.core.learning.member_data import MemberData, load_member_data
from fractofl.core.model.factory import model_for
from fractofl.core.synth.dataset import member_dir


def _member(easy_dataset: Path) -> tuple[RunConfig, MemberData]:
    cfg = RunConfig()
    cfg.data.root = str(easy_dataset)
    cfg.model.image_size = 32
    cfg.train = replace(cfg.train, local_epochs=1)
    return cfg, load_member_data(member_dir(easy_dataset, 0), cfg, easy_dataset / "cache")


def _weights_after(
    train_once: Callable[[nn.Module], object], cfg: RunConfig
) -> dict[str, np.ndarray]:
    """The weights after ``train_once`` on the same fresh model (seed 0)."""
    torch.manual_seed(0)
    model = model_for(cfg)
    train_once(model)
    return state_as_numpy(model)


def test_the_federations_loss_is_used_by_a_member_but_not_by_its_own_models(
    easy_dataset: Path,
) -> None:
    # Prepare: member 0's images (it holds its classes in unequal numbers)
    plain_cfg, data = _member(easy_dataset)
    assert plain_cfg.train.loss == "cross_entropy"  # the default
    balanced_cfg = replace(plain_cfg, train=replace(plain_cfg.train, loss="balanced_softmax"))
    counts = data.train.class_counts(len(plain_cfg.data.classes))
    assert len(set(counts)) > 1
    lr = balanced_cfg.train.lr
    # Execute: the same start, seed and steps
    plain = _weights_after(lambda m: train_locally(m, data, plain_cfg, seed=5), plain_cfg)
    balanced = _weights_after(lambda m: train_locally(m, data, balanced_cfg, seed=5), plain_cfg)
    own = member_trainer(data, balanced_cfg)
    own_model = _weights_after(lambda m: own(m, 5, 1, lr, None), plain_cfg)
    # Assert: a round's training follows train.loss; the member's own model, trained
    # under the balanced_softmax config, is exactly the cross-entropy one
    assert any(float(abs(plain[k] - balanced[k]).max()) > 1e-4 for k in plain if "weight" in k)
    assert all((own_model[k] == plain[k]).all() for k in plain)
