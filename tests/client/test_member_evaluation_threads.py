"""A member's evaluation keeps to ``train.threads``, as its training does: a deployed
member's evaluation instruction runs in a ClientApp process of its own, where torch would
otherwise use every core beside the other members on the same machine."""

from __future__ import annotations

from pathlib import Path

import torch

from fractofl.client.member import evaluate_locally
from fractofl.core.model.factory import model_for
from tests.conftest import easy_member_zero


def test_a_members_evaluation_keeps_to_train_threads(easy_dataset: Path) -> None:
    # Prepare: member 0's images; torch set to two threads, as a fresh process on 2 cores
    cfg, data = easy_member_zero(easy_dataset, threads=1)
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
