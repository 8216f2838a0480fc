"""Where a run's CPU goes: the CPU seconds of each kind of Flower and fractofl process
(SuperLink, ServerApp, SuperNodes, warm members, Ray's ...), sampled from the processes
the benchmark started (its descendants; the benchmark's own process is left out).

Every ``interval_s`` the sampler walks the trees and keeps the last CPU time (user +
system) seen for each process; a process's last ``interval_s`` before it exits is missed,
except for the warm member's forked ClientApps, whose CPU is counted in full through the
warm member, which waits for them (its children's CPU).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil

ROLES = (
    ("SuperLink", re.compile(r"flower-superlink")),
    ("ServerApp", re.compile(r"flwr-serverapp")),
    ("SuperExecs", re.compile(r"flower-superexec")),
    ("SuperNodes", re.compile(r"supernode_main|flower-supernode")),
    ("warm members and their ClientApps", re.compile(r"fractofl\.client\.warm_member")),
    ("ClientApp launchers", re.compile(r"flwr-clientapp")),
    ("Ray (simulation)", re.compile(r"ray::|raylet|gcs_server|/ray/")),
    ("fractofl commands (simulate, up, join, run)", re.compile(r"fractofl")),
)
"""Role names and the command-line pattern that picks them, first match wins."""
OTHER = "other"
WARM_MEMBER = ROLES[4][0]


def role_of(command_line: str) -> str:
    """The role of a process with ``command_line``."""
    return next((name for name, pattern in ROLES if pattern.search(command_line)), OTHER)


@dataclass
class _Seen:
    role: str
    cpu_s: float = 0.0


class CpuByRole:
    """Samples the descendants of the processes ``roots()`` returns (not the roots
    themselves; by default: of this process) from :meth:`start` until :meth:`stop`."""

    def __init__(
        self, roots: Callable[[], Iterable[int]] | None = None, interval_s: float = 0.5
    ) -> None:
        self.roots = roots or (lambda: [os.getpid()])
        self.interval_s = interval_s
        self.seen: dict[tuple[int, float], _Seen] = {}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-by-role", daemon=True)

    def start(self) -> CpuByRole:
        """Begin sampling in a thread of its own."""
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            self.sample()

    def stop(self) -> dict[str, float]:
        """Stop sampling (after one last sample); CPU seconds by role."""
        self._stopped.set()
        self._thread.join()
        self.sample()
        totals: dict[str, float] = {}
        for seen in self.seen.values():
            totals[seen.role] = totals.get(seen.role, 0.0) + seen.cpu_s
        return totals

    def sample(self) -> None:
        """Record the CPU time of every process in the trees now."""
        for pid in list(self.roots()):
            try:
                tree = psutil.Process(pid).children(recursive=True)
            except psutil.Error:
                continue
            known = {}
            for process in tree:
                try:
                    key = (process.pid, process.create_time())
                except psutil.Error:
                    continue
                known[process] = self.seen.setdefault(key, _Seen(self._role(process)))
            warm = {p.pid for p, seen in known.items() if seen.role == WARM_MEMBER}
            for process, seen in known.items():
                try:
                    if process.ppid() in warm:
                        continue  # a forked ClientApp: counted through its warm member
                    times = process.cpu_times()
                except psutil.Error:
                    continue
                seen.cpu_s = times.user + times.system
                if seen.role == WARM_MEMBER:
                    seen.cpu_s += times.children_user + times.children_system

    @staticmethod
    def _role(process: psutil.Process) -> str:
        try:
            return role_of(" ".join(process.cmdline()))
        except psutil.Error:
            return OTHER
