"""The coordinator's user-facing errors, importable without torch or Flower (the CLI
prints them without a traceback)."""

from __future__ import annotations


class RunFolderError(ValueError):
    """A run folder cannot be resumed: missing, finished, or made with another config."""


class RoundStateError(ValueError):
    """A run folder has no usable checkpoint to resume from."""


class NotEnoughMembersError(RuntimeError):
    """A round could not get ``min_train_members`` replies within its retries."""
