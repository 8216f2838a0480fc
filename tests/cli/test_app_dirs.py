"""A killed simulation's Flower app folder is removed by the next simulation; nothing else
in the temporary folder is touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fractofl.cli.app_dirs import APP_DIR_PREFIX, remove_stale_app_dirs


def test_only_folders_of_processes_that_are_gone_are_removed(tmp_path: Path) -> None:
    # Prepare: a process that has ended, and folders named for it, for this (running)
    # process, and otherwise
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    stale = tmp_path / f"{APP_DIR_PREFIX}{ended.pid}-k2x9_q1a"
    running = tmp_path / f"{APP_DIR_PREFIX}{os.getpid()}-a8fj2k_0"
    unnamed = tmp_path / f"{APP_DIR_PREFIX}qw3e_r5t"  # no process id in the name
    other = tmp_path / f"not-fractofl-{ended.pid}-x"
    for folder in (stale, running, unnamed, other):
        folder.mkdir()
        (folder / "pyproject.toml").write_text("[project]\n")
    a_file = tmp_path / f"{APP_DIR_PREFIX}{ended.pid}-file"
    a_file.write_text("not a folder")
    # Execute
    removed = remove_stale_app_dirs(tmp_path)
    # Assert
    assert removed == [stale]
    assert not stale.exists()
    assert all(p.exists() for p in (running, unnamed, other, a_file))
