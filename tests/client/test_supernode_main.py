"""The SuperNode entry point that caps Flower's 3 s idle wait (``deployment.member_poll_s``)."""

from __future__ import annotations

import functools
import inspect
import math
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from fractofl.cli.config import ConfigError, load_run_config
from fractofl.client.message_pull import RETRY_CAP_S, RETRY_FIRST_S
from fractofl.client.supernode import SUPERNODE_MAIN, JoinSettings, supernode_command
from fractofl.client.supernode_main import (
    TASK_POLL_ENV,
    CappedSleep,
    PollSettingError,
    cap_supernode_waits,
    check_poll_s,
    check_task_poll_s,
    pull_arrays_sooner,
    split_arguments,
)


def test_flowers_loop_still_waits_3_s_through_its_time_module() -> None:
    # Arrange: the wait this entry point exists to shorten, in the installed Flower
    import flwr.supernode.start_client_internal as loop

    # Assert: if Flower moves or renames it, this fails instead of the cap silently not
    # applying
    assert "time.sleep(3)" in inspect.getsource(loop.start_client_internal)
    assert loop.time is time


def test_the_cap_reaches_flowers_loop_and_only_shortens_its_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Arrange: Flower's real module, restored after the test; record what is really slept
    import flwr.supernode.start_client_internal as loop

    monkeypatch.setattr(loop, "time", loop.time)
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    # Execute
    cap_supernode_waits(loop, 0.5)
    loop.time.sleep(3)  # the idle wait
    loop.time.sleep(0.5)  # waiting for its ClientApp's reply
    loop.time.sleep(0.1)
    # Assert: capped, never lengthened; the rest of the time module is the real one
    assert slept == [0.5, 0.5, 0.1]
    assert isinstance(loop.time, CappedSleep)
    assert loop.time.monotonic is time.monotonic


def test_a_flower_that_waits_another_way_is_refused() -> None:
    # Arrange: a loop module without the time module or pull_objects (another Flower)
    other = ModuleType("flwr.supernode.start_client_internal")
    # Execute / Assert
    with pytest.raises(RuntimeError, match=r"written for flwr 1\.42\.0"):
        cap_supernode_waits(other, 0.5)
    with pytest.raises(RuntimeError, match=r"no pull_objects .* flwr 1\.42\.0"):
        pull_arrays_sooner(other)


def test_the_supernode_retries_a_missing_array_sooner_with_flowers_overall_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Arrange: Flower's real loop module and its real pull_objects, restored after the test
    import flwr.supernode.start_client_internal as loop
    from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError

    monkeypatch.setattr(loop, "pull_objects", loop.pull_objects)
    answers = iter([None, None, None, b"arrays"])

    def pull_object(object_id: str) -> bytes:
        answer = next(answers)
        if answer is None:
            raise ObjectUnavailableError(object_id)
        return answer

    # Execute: three misses before the array arrives
    pull_arrays_sooner(loop)
    pull_arrays_sooner(loop)  # a second call leaves it as it is
    pulled = loop.pull_objects(["a"], pull_object_fn=pull_object)
    # Assert: the arguments that make Flower's own backoff start at 0.1 s and stop at 1 s
    assert pulled == {"a": b"arrays"}
    assert loop.pull_objects.keywords == {
        "initial_backoff": RETRY_FIRST_S,
        "backoff_cap": RETRY_CAP_S,
        "max_tries_per_object": None,
    }
    assert not isinstance(loop.pull_objects.func, functools.partial)


@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, 3.5])
def test_a_wait_out_of_range_is_refused_naming_the_setting(value: float) -> None:
    # Execute / Assert
    expected = r"deployment\.member_poll_s=.* above 0 and at most 3"
    with pytest.raises(PollSettingError, match=expected):
        check_poll_s(value)


@pytest.mark.parametrize("value", [0.0, 0.001, math.nan, 61.0])
def test_a_task_poll_flower_would_refuse_is_refused_first(value: float) -> None:
    # Execute / Assert
    with pytest.raises(PollSettingError, match=r"member_task_poll_s=.* between 0\.01 and 60"):
        check_task_poll_s(value)


def test_the_config_refuses_them_before_anything_starts() -> None:
    # Execute / Assert
    with pytest.raises(ConfigError, match=r"deployment\.member_poll_s=0\.0"):
        load_run_config(["deployment.member_poll_s=0"], training=False)
    with pytest.raises(ConfigError, match=r"deployment\.member_task_poll_s=0\.0"):
        load_run_config(["deployment.member_task_poll_s=0"], training=False)
    defaults = load_run_config([], training=False).deployment
    assert (defaults.member_poll_s, defaults.member_task_poll_s) == (0.5, 0.1)


def test_flowers_arguments_pass_through_unchanged() -> None:
    # Execute
    poll_s, task_poll_s, flower = split_arguments(
        ["--poll-s", "0.25", "--task-poll-s", "0.05", "--", "--superlink", "c:9092",
         "--node-config", 'a="b c"']
    )  # fmt: skip
    # Assert
    assert (poll_s, task_poll_s) == (0.25, 0.05)
    assert flower == ["--superlink", "c:9092", "--node-config", 'a="b c"']


def test_member_join_runs_the_supernode_through_it(tmp_path: Path) -> None:
    # Arrange
    settings = JoinSettings(
        "coordinator:9092", tmp_path, None, None, 9094, poll_s=0.5, task_poll_s=0.1
    )
    # Execute
    command = supernode_command(settings, insecure=True)
    # Assert
    assert command[:8] == [
        sys.executable, "-m", SUPERNODE_MAIN, "--poll-s", "0.5", "--task-poll-s", "0.1", "--"
    ]  # fmt: skip
    assert command[8:10] == ["--superlink", "coordinator:9092"] and command[-1] == "--insecure"


def test_without_a_setting_it_is_flowers_own_supernode(tmp_path: Path) -> None:
    # Execute
    command = supernode_command(JoinSettings("c:9092", tmp_path, None, None, 9094), True)
    # Assert
    assert Path(command[0]).name == "flower-supernode"


def test_the_entry_point_hands_its_arguments_to_flowers_supernode() -> None:
    # Execute: a real process; Flower's own parser answers --help
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            SUPERNODE_MAIN,
            "--poll-s",
            "0.5",
            "--task-poll-s",
            "0.1",
            "--",
            "--help",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # Assert
    assert done.returncode == 0, done.stderr
    assert "--superlink" in done.stdout and "--node-config" in done.stdout
    assert "SuperExec asks it for a ClientApp to start every 0.1 s" in done.stdout


def test_the_superexec_it_starts_gets_the_task_poll_from_its_environment() -> None:
    # Execute: the environment variable Flower's SuperExec reads, set by main() in a real
    # process that then asks Flower's own reader what interval it would use
    probe = (
        "import sys, os; from fractofl.client import supernode_main as m; "
        "import flwr.supercore.superexec.run_superexec as s; "
        "sys.argv = ['x', '--poll-s', '0.5', '--task-poll-s', '0.05', '--', '--help']; "
        "import flwr.supernode.cli as c; c.flower_supernode = lambda: print("
        f"os.environ['{TASK_POLL_ENV}'], s._get_task_poll_interval()); m.main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    # Assert
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "0.05 0.05"
