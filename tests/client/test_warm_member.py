"""The warm member and its thin launcher, as real processes: the launcher hands Flower's
command line over an owner-only Unix socket and the warm member forks a ready child to
run it; a socket that is not the member's own is refused; a launcher that goes away
takes its child with it; a second warm member on the same folder is refused."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from fractofl.client.supernode import start_warm_member, warm_socket
from fractofl.client.warm_launcher import (
    WarmMemberUnavailableError,
    check_socket,
    write_launcher,
)
from tests.federation.conftest import wait_for

TIMEOUT_S = 120


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A running warm member (its output in a file) and a launcher pointed at it."""
    member_dir = tmp_path_factory.mktemp("member")
    output = member_dir / "warm.out"
    with output.open("wb") as handle:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fractofl.client.warm_member",
                "--socket",
                str(warm_socket(member_dir)),
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    wait_for(lambda: "warm member ready" in output.read_text(), TIMEOUT_S, "the warm member")
    launcher = write_launcher(member_dir / "bin", warm_socket(member_dir))
    yield launcher, output
    process.terminate()
    process.wait(timeout=TIMEOUT_S)


def _warm_parent(warm_output: Path) -> psutil.Process:
    return next(
        p
        for p in psutil.process_iter(["cmdline"])
        if str(warm_output.parent) in " ".join(p.info["cmdline"] or [])
        and "fractofl.client.warm_member" in " ".join(p.info["cmdline"] or [])
    )


def _forked_child(parent: psutil.Process) -> psutil.Process | None:
    """The warm member's forked child, or None yet. A fork keeps its parent's command
    line; a helper that importing torch may start while the member warms up does not
    (the socket is open before the warm-up ends), so it is never taken for the child."""
    command = parent.cmdline()
    for child in parent.children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.cmdline() == command:
                return child
    return None


def _wait_for_forked_child(parent: psutil.Process) -> psutil.Process:
    """The forked child once two polls in a row find the same one (a helper's own fork
    shows its parent's command line only until its exec, microseconds later)."""
    found: list[psutil.Process] = []

    def forked() -> bool:
        child = _forked_child(parent)
        seen_before = child is not None and bool(found) and found[-1].pid == child.pid
        if child is not None:
            found.append(child)
        return seen_before

    wait_for(forked, TIMEOUT_S, "the forked child")
    return found[-1]


def test_the_launcher_has_a_forked_child_run_flowers_clientapp(warm: tuple[Path, Path]) -> None:
    # Execute
    launcher, output = warm
    shown = subprocess.run([str(launcher), "--help"], timeout=TIMEOUT_S, check=False)
    # Assert: the child ran Flower's own flwr-clientapp (its help, in the warm member's
    # output, which is the member's terminal) and its exit code came back
    assert shown.returncode == 0
    wait_for(lambda: "Run a Flower ClientApp" in output.read_text(), TIMEOUT_S, "the help")
    socket_path = warm_socket(launcher.parent.parent)
    assert oct(socket_path.stat().st_mode & 0o777) == "0o600"
    assert oct(socket_path.parent.stat().st_mode & 0o777) == "0o700"


def test_a_launcher_that_goes_away_takes_its_child_with_it(warm: tuple[Path, Path]) -> None:
    # Prepare: an instruction whose SuperNode never answers (the child keeps retrying)
    launcher, output = warm
    waiting = subprocess.Popen(
        [str(launcher), "--runtime-api-address", "127.0.0.1:9", "--token", "t", "--insecure"]
    )
    child = _wait_for_forked_child(_warm_parent(output))
    # Execute: Flower stops the task (kills its process)
    waiting.kill()
    waiting.wait()
    # Assert
    wait_for(lambda: not child.is_running() or child.status() == "zombie", TIMEOUT_S, "child gone")


def test_a_second_warm_member_on_the_same_folder_is_refused(warm: tuple[Path, Path]) -> None:
    launcher, _ = warm
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "fractofl.client.warm_member",
            "--socket",
            str(warm_socket(launcher.parent.parent)),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert second.returncode == 1
    assert "a warm member already listens at" in second.stderr


def test_a_socket_others_may_use_or_another_user_owns_is_refused(tmp_path: Path) -> None:
    # Prepare: a warm member of this user, started as `member join` starts it
    warm = start_warm_member(tmp_path, dict(os.environ))
    path = warm_socket(tmp_path)
    try:
        check_socket(path)  # the member's own: accepted
        # Execute / Assert
        path.chmod(0o666)
        with pytest.raises(WarmMemberUnavailableError, match="may be used by other users"):
            check_socket(path)
        if os.getuid() == 0:  # only root can give a file away
            path.chmod(0o600)
            os.chown(path, 4321, -1)
            with pytest.raises(WarmMemberUnavailableError, match="belongs to user id 4321"):
                check_socket(path)
    finally:
        warm.stop()
    with pytest.raises(WarmMemberUnavailableError, match="no warm member socket at"):
        check_socket(tmp_path / "nowhere.sock")


def test_a_warm_member_that_dies_mid_instruction_leaves_the_instruction_to_finish(
    tmp_path: Path,
) -> None:
    # Prepare: a warm member of its own, running an instruction that keeps going (its
    # SuperNode never answers)
    warm = start_warm_member(tmp_path, dict(os.environ))
    launcher = write_launcher(tmp_path / "bin", warm_socket(tmp_path))
    waiting = subprocess.Popen(
        [str(launcher), "--runtime-api-address", "127.0.0.1:9", "--token", "t", "--insecure"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        child = _wait_for_forked_child(psutil.Process(warm.process.pid))
        # Execute: the warm member dies; later its orphaned child ends
        warm.process.kill()
        warm.process.wait(timeout=TIMEOUT_S)
        assert waiting.poll() is None and child.is_running()
        child.kill()
        _, stderr = waiting.communicate(timeout=TIMEOUT_S)
    finally:
        waiting.kill()
        warm.stop()
    # Assert: the launcher waited for the instruction's own process, then said what happened
    assert waiting.returncode == 75
    assert "the warm member stopped while this instruction ran (its process ran on" in stderr
    assert "restart `fractofl member join`" in stderr


def test_a_resnet_clientapp_forked_from_the_warm_member_imports_no_torchvision() -> None:
    # A fresh process that warms up as the warm member does: building a ResNet (what each
    # forked ClientApp of a ResNet run does) then imports no torchvision and no
    # torch._dynamo module of its own (1.3 s of CPU per instruction otherwise).
    probe = (
        "import sys\n"
        "from fractofl.client.warm_member import warm_up\n"
        "warm_up()\n"
        "before = set(sys.modules)\n"
        "from fractofl.core.model.architectures import build_model\n"
        "build_model('resnet18', num_classes=4)\n"
        "print(' '.join(sorted(set(sys.modules) - before)) or '-')\n"
        "print('torchvision' in before)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    imported, had_torchvision = result.stdout.split("\n")[:2]
    assert had_torchvision == "True"
    heavy = [m for m in imported.split() if m.startswith(("torchvision", "torch._dynamo"))]
    assert heavy == []
