"""The benchmark's CPU by kind of process (real child processes, no benchmark run)."""

from __future__ import annotations

import subprocess
import sys

from cpu_roles import OTHER, WARM_MEMBER, CpuByRole, role_of
from parts.federation import Measured, cpu_table

BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"
# Then it says so and stays until told to go, so the sampler sees all of its CPU.
DONE = "import sys\nprint('done', flush=True)\nsys.stdin.read()\n"
# A warm member forks a ClientApp that works, waits for it, then works itself.
FORKING = (
    "import os, time\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    t = time.process_time()\n"
    "    while time.process_time() - t < 0.6: pass\n"
    "    os._exit(0)\n"
    "os.waitpid(pid, 0)\n" + BUSY.format(s=0.3) + DONE
)


def test_roles_are_told_by_command_line_first_match_first() -> None:
    assert role_of("python -m fractofl.client.warm_member --socket s") == WARM_MEMBER
    assert role_of("/venv/bin/python /venv/bin/flower-superlink --insecure") == "SuperLink"
    assert role_of("python -m fractofl.client.supernode_main -- --insecure") == "SuperNodes"
    assert role_of("python /venv/bin/fractofl simulate").startswith("fractofl commands")
    assert role_of("/usr/sbin/nginx -c nginx.conf") == OTHER


def test_a_warm_members_forked_clientapp_counts_once_through_it() -> None:
    # Prepare: a "SuperLink" busy for 0.4 s of CPU and a "warm member" whose forked child
    # works 0.6 s and which works 0.3 s itself
    sampler = CpuByRole(interval_s=0.1).start()
    superlink = [sys.executable, "-c", BUSY.format(s=0.4) + DONE, "flower-superlink"]
    warm = [sys.executable, "-c", FORKING, "fractofl.client.warm_member"]
    running = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for command in (superlink, warm)
    ]
    # Execute: sampled to the end of their work, while they still run
    try:
        assert [p.stdout.readline() for p in running if p.stdout] == ["done\n"] * 2
        cpu = sampler.stop()
    finally:
        for process in running:
            process.communicate(timeout=60)
    # Assert: each role's CPU (its interpreter's start-up included), the forked child's
    # inside its warm member and not beside it. The kernel counts CPU in 10 ms ticks, so
    # each process may read up to a tick under what it burnt (0.9 was read as 0.8999...).
    tick = 0.01
    assert 0.4 - 2 * tick <= cpu["SuperLink"] <= 0.8, cpu
    assert 0.9 - 2 * 2 * tick <= cpu[WARM_MEMBER] <= 1.4, cpu  # itself and its child
    assert set(cpu) == {"SuperLink", WARM_MEMBER}


def test_the_cpu_table_shows_per_round_figures_of_the_roles_some_row_has() -> None:
    # Prepare
    simulated = Measured("(1) simulation", 1.0, None, "ok", cpu_by_role={OTHER: 6.0})
    deployed = Measured("(2) deployment", 2.0, 1.0, "ok", cpu_by_role={"SuperLink": 3.0})
    failed = Measured("(3) failed", float("nan"), None, "FAILED")
    # Execute
    table = cpu_table([simulated, deployed, failed], rounds=3)
    # Assert
    assert "| Configuration | SuperLink | other | all |" in table
    assert "| (1) simulation | 0.0 | 2.0 | 2.0 |" in table
    assert "| (2) deployment | 1.0 | 0.0 | 1.0 |" in table
    assert "(3) failed" not in table
