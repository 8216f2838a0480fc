"""Running a command while sampling the resident memory of its whole process tree."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

GIB = 1024**3


@dataclass(frozen=True)
class MemoryPeak:
    """Peaks seen while a command ran (RSS summed over the tree counts shared pages twice)."""

    returncode: int
    wall_s: float
    peak_tree_bytes: int
    peak_main_bytes: int
    peak_processes: int
    samples: int

    @property
    def peak_tree_gib(self) -> float:
        """Peak summed RSS of the process and all its descendants, in GiB."""
        return self.peak_tree_bytes / GIB

    @property
    def peak_main_gib(self) -> float:
        """Peak RSS of the launched process alone, in GiB."""
        return self.peak_main_bytes / GIB


def _rss(process: psutil.Process) -> int:
    try:
        return int(process.memory_info().rss)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return []


def run_sampled(
    command: Sequence[str],
    env: Mapping[str, str],
    log_path: Path,
    interval_s: float = 0.2,
    timeout_s: float = 3600.0,
) -> MemoryPeak:
    """Run ``command`` (stdout and stderr to ``log_path``), sampling RSS every ``interval_s``.

    The tree is the launched process plus every descendant (for a Flower simulation:
    Ray's gcs_server, raylet and worker processes). A command still running after
    ``timeout_s`` is killed with its tree and reported with return code -9.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    peak_tree = peak_main = peak_procs = samples = 0
    with log_path.open("w") as log:
        child = subprocess.Popen(list(command), env=dict(env), stdout=log, stderr=log)
        root = psutil.Process(child.pid)
        while child.poll() is None:
            tree = _tree(root)
            sizes = [_rss(p) for p in tree]
            if tree:
                peak_tree = max(peak_tree, sum(sizes))
                peak_main = max(peak_main, sizes[0])
                peak_procs = max(peak_procs, len(tree))
                samples += 1
            if time.monotonic() - started > timeout_s:
                for process in reversed(tree):
                    with contextlib.suppress(psutil.Error):
                        process.kill()
                break
            time.sleep(interval_s)
        returncode = child.wait()
    return MemoryPeak(
        returncode=returncode,
        wall_s=time.monotonic() - started,
        peak_tree_bytes=peak_tree,
        peak_main_bytes=peak_main,
        peak_processes=peak_procs,
        samples=samples,
    )
