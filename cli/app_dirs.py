"""The Flower app folders that simulations write in the temporary folder, and the removal
of those that a killed simulation left behind (its ``TemporaryDirectory`` never cleaned up).

Apart from :mod:`fractofl.cli.simulation` so that it imports neither Flower nor Ray."""

from __future__ import annotations

import shutil
from pathlib import Path

import psutil

# The Flower app folder of a simulation, in the temporary folder: fractofl-app-<pid>-<random>
APP_DIR_PREFIX = "fractofl-app-"


def remove_stale_app_dirs(temp_root: Path) -> list[Path]:
    """Remove the app folders that simulations killed before their clean-up left in
    ``temp_root`` (those named for a process that no longer runs); the folders removed.
    Folders of running processes, and any other name, are left alone."""
    removed = []
    for folder in temp_root.glob(f"{APP_DIR_PREFIX}*"):
        pid = folder.name.removeprefix(APP_DIR_PREFIX).partition("-")[0]
        if folder.is_dir() and pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)  # another user's: not ours to remove
            if not folder.exists():
                removed.append(folder)
    return removed
