"""A member's evaluation keeps to ``train.threads``, as its training does: a deployed
member's evaluation instruction runs in a ClientApp process of its own, where torch would
otherwise use every core beside the other members on the same machine."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from fractofl.client.member import evaluate_locally
from fractofl.core.config.run_config import RunConfig
from fractofl.core.learning.member_data import load_member_data
from fractofl.core.model.factory import model_for
from fractofl.core.synth.dataset import member_dir


def test_a_members_evaluation_keeps_to_train_threads(easy_dataset: Path) -> None:
    # Prepare: member 0's images; torch set to two threads, as a fresh process on 2 cores
    cfg = RunConfig()
    cfg.data.root = str(easy_dataset)
    cfg.model.image_size = 32
    cfg.train = replace(cfg.train, threads=1)
    data = load_member_data(member_dir(easy_dataset, 0), cfg, easy_dataset / "cache")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        # Execute
        scored = evaluate_locally(model_for(cfg), data, cfg)
        # Assert
        assert scored is not None and scored.examples == len(data.val)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
