"""Self-describing checkpoints: rebuild without any training config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fractofl.core.model.architectures import build_model, default_preprocessing
from fractofl.core.model.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)


def test_checkpoint_rebuilds_the_same_model(tmp_path: Path) -> None:
    # Prepare
    model = build_model("small_cnn", num_classes=3, width=8).eval()
    checkpoint = Checkpoint(
        architecture="small_cnn",
        arch_args={"width": 8},
        classes=["fatigue", "ductile", "cleavage"],
        preprocessing=default_preprocessing("small_cnn", 32),
        state_dict=model.state_dict(),
        round=7,
        run_id="abc",
        metrics={"test_accuracy": 0.8},
    )
    batch = torch.randn(2, 1, 32, 32)
    # Execute
    path = save_checkpoint(checkpoint, tmp_path / "m" / "model.pt")
    loaded = load_checkpoint(path)
    rebuilt = loaded.build_model()
    # Assert
    assert (loaded.architecture, loaded.arch_args, loaded.round, loaded.run_id) == (
        "small_cnn",
        {"width": 8},
        7,
        "abc",
    )
    assert loaded.classes == ["fatigue", "ductile", "cleavage"]
    assert loaded.preprocessing == checkpoint.preprocessing
    assert loaded.metrics == {"test_accuracy": 0.8}
    with torch.no_grad():
        assert torch.equal(rebuilt(batch), model(batch))
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary left


def test_non_checkpoint_files_are_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "x.pt"
    torch.save({"state_dict": {}}, bogus)
    garbage = tmp_path / "y.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a fractofl checkpoint"):
        load_checkpoint(bogus)
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
