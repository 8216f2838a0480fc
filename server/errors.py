"""The coordinator's user-facing errors, importable without torch or Flower (the CLI
prints them without a traceback)."""

from __future__ import annotations

from pathlib import Path


class RunFolderError(ValueError):
    """A run folder cannot be resumed: missing, finished, or made with another config."""


class RoundStateError(ValueError):
    """A run folder has no usable checkpoint to resume from."""


class NotEnoughMembersError(RuntimeError):
    """A round could not get ``min_train_members`` replies within its retries."""


def refuse_used_run_folder(path: Path) -> None:
    """``FileExistsError`` when ``path`` already holds a run: a new run never writes into
    another's folder (checked before the run starts, and again when it makes the folder)."""
    if path.is_dir() and any(path.iterdir()):
        raise FileExistsError(f"run folder {path} already holds a run; choose another output.name")
