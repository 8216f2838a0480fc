"""Self-describing checkpoints: weights plus everything needed to rebuild and use them.

A checkpoint stores the architecture name and its arguments, the class list, the
preprocessing, the round, the run id and the metrics beside the ``state_dict``, so
serving rebuilds the model without any training configuration (as nanoGPT and timm do).
It is a plain ``torch.save`` dictionary of tensors and primitives, loadable with
``weights_only=True`` by older torch releases too.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fractofl.core.files.atomic import atomic_write
from fractofl.core.images.preprocessing import Preprocessing
from fractofl.core.model.architectures import build_model

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not a fractofl checkpoint."""


@dataclass
class Checkpoint:
    """A model's weights and its self-description."""

    architecture: str
    arch_args: dict[str, Any]
    classes: list[str]
    preprocessing: Preprocessing
    state_dict: dict[str, torch.Tensor]
    round: int = 0
    run_id: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def build_model(self) -> nn.Module:
        """Rebuild the network and load the weights, in eval mode."""
        model = build_model(
            self.architecture,
            num_classes=len(self.classes),
            in_channels=self.preprocessing.in_channels,
            **self.arch_args,
        )
        model.load_state_dict(self.state_dict)
        return model.eval()


def save_checkpoint(checkpoint: Checkpoint, path: Path) -> Path:
    """Write a checkpoint atomically (temporary file, fsync, rename)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "architecture": checkpoint.architecture,
        "arch_args": dict(checkpoint.arch_args),
        "classes": list(checkpoint.classes),
        "preprocessing": checkpoint.preprocessing.to_dict(),
        "round": int(checkpoint.round),
        "run_id": checkpoint.run_id,
        "metrics": {k: float(v) for k, v in checkpoint.metrics.items()},
        "created": checkpoint.created,
        "state_dict": {k: v.detach().cpu() for k, v in checkpoint.state_dict.items()},
    }
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (no code is unpickled)."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return load_checkpoint_bytes(path.read_bytes(), str(path))


def load_checkpoint_bytes(data: bytes, source: str) -> Checkpoint:
    """A checkpoint from bytes already read (e.g. the very bytes whose hash was checked
    against a signature, so the file cannot change in between); ``source`` names them
    in errors."""
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {source} is unreadable: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{source} is not a fractofl checkpoint of format {CHECKPOINT_FORMAT}"
        )
    return Checkpoint(
        architecture=payload["architecture"],
        arch_args=payload["arch_args"],
        classes=payload["classes"],
        preprocessing=Preprocessing.from_dict(payload["preprocessing"]),
        state_dict=payload["state_dict"],
        round=payload["round"],
        run_id=payload["run_id"],
        metrics=payload["metrics"],
        created=payload["created"],
    )
