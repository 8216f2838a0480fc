"""Flower's SuperNode, with the waits between an instruction and its ClientApp shortened.

Three waits of Flower 1.42's SuperNode sit between the coordinator sending an instruction
and the member's ClientApp working on it, each paid twice a round (train, then evaluate):

- its loop sleeps a literal 3 s whenever it asks the SuperLink for an instruction and there
  is none, and 0.5 s at a time while its ClientApp works
  (``flwr/supernode/start_client_internal.py``); capped here at
  ``deployment.member_poll_s``, which Flower has no setting for;
- it downloads an instruction's arrays as soon as its header is in, while the coordinator
  may still be uploading them, and retries a missing one after 1, 2, 4, 8 s: retried here
  as the ClientApp's own pull is (:mod:`fractofl.client.message_pull`);
- its SuperExec asks it for a ClientApp to start once a second: set to
  ``deployment.member_task_poll_s`` through Flower's own ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``.

Then it runs Flower's own ``flower-supernode``, unchanged, with the arguments it was given.
Run as ``python -m fractofl.client.supernode_main --poll-s S --task-poll-s T -- <args>``.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import time
from collections.abc import Sequence
from types import ModuleType

from fractofl.client.message_pull import retried_sooner

FLOWER_IDLE_WAIT_S = 3.0  # Flower 1.42's wait between asks when it got no instruction
FLOWER_TASK_POLL_S = 1.0  # Flower 1.42's SuperExec default between asks for a ClientApp
POLL_FLAG = "--poll-s"
TASK_POLL_FLAG = "--task-poll-s"
TASK_POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"  # Flower's; it accepts 0.01 to 60 s
TASK_POLL_RANGE_S = (0.01, 60.0)


class PollSettingError(ValueError):
    """``deployment.member_poll_s`` or ``member_task_poll_s`` is not a wait this entry point
    can set."""


def check_poll_s(poll_s: float) -> float:
    """``poll_s`` if it is above 0 and at most Flower's own 3 s, else an error naming the
    setting."""
    number = isinstance(poll_s, int | float) and not math.isnan(poll_s)
    if not number or not 0 < poll_s <= FLOWER_IDLE_WAIT_S:
        raise PollSettingError(
            f"deployment.member_poll_s={poll_s!r} must be above 0 and at most "
            f"{FLOWER_IDLE_WAIT_S:g} (Flower's own wait between asks); 0.5 is the default"
        )
    return float(poll_s)


def check_task_poll_s(task_poll_s: float) -> float:
    """``task_poll_s`` if Flower's SuperExec accepts it, else an error naming the setting."""
    low, high = TASK_POLL_RANGE_S
    if not isinstance(task_poll_s, int | float) or not low <= task_poll_s <= high:
        raise PollSettingError(
            f"deployment.member_task_poll_s={task_poll_s!r} must be between {low:g} and "
            f"{high:g} (what Flower's SuperExec accepts); 0.1 is the default"
        )
    return float(task_poll_s)


class CappedSleep:
    """The ``time`` module, whose ``sleep`` waits at most ``cap_s`` seconds."""

    def __init__(self, cap_s: float) -> None:
        self.cap_s = cap_s

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.cap_s))

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def cap_supernode_waits(loop: ModuleType, poll_s: float) -> None:
    """Make Flower's SuperNode loop (``loop``, its ``start_client_internal`` module) wait
    at most ``poll_s`` between asks; refuse a Flower whose loop no longer waits through
    the module's ``time`` (another Flower version), rather than silently keep 3 s."""
    if getattr(loop, "time", None) is not time:
        raise RuntimeError(
            f"{loop.__name__} does not wait through the time module as Flower 1.42 does; "
            "this fractofl was written for flwr 1.42.0: reinstall fractofl's pinned flwr"
        )
    loop.time = CappedSleep(check_poll_s(poll_s))  # type: ignore[attr-defined]


def pull_arrays_sooner(loop: ModuleType) -> None:
    """Have the SuperNode's loop retry an instruction's array that the coordinator has not
    finished uploading after 0.1 s growing to 1 s (Flower: 1 s growing to 10 s); its overall
    limit stays Flower's (``PULL_MAX_TIME``), so the number of retries is not limited."""
    pull = getattr(loop, "pull_objects", None)
    if not callable(pull):
        raise RuntimeError(
            f"{loop.__name__} has no pull_objects as Flower 1.42 has; this fractofl was "
            "written for flwr 1.42.0: reinstall fractofl's pinned flwr"
        )
    if isinstance(pull, functools.partial):
        return
    loop.pull_objects = retried_sooner(pull)  # type: ignore[attr-defined]


def split_arguments(argv: Sequence[str]) -> tuple[float, float, list[str]]:
    """The two poll intervals and Flower's own arguments (everything after ``--``)."""
    parser = argparse.ArgumentParser(prog="python -m fractofl.client.supernode_main")
    parser.add_argument(POLL_FLAG, dest="poll_s", type=float, required=True)
    parser.add_argument(TASK_POLL_FLAG, dest="task_poll_s", type=float, required=True)
    parser.add_argument("flower", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    flower = list(args.flower)
    if flower[:1] == ["--"]:
        flower = flower[1:]
    return check_poll_s(args.poll_s), check_task_poll_s(args.task_poll_s), flower


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``flower-supernode`` with the given arguments and its waits shortened."""
    poll_s, task_poll_s, flower_arguments = split_arguments(sys.argv[1:] if argv is None else argv)
    import flwr.supernode.start_client_internal as loop
    from flwr.supernode.cli import flower_supernode

    cap_supernode_waits(loop, poll_s)
    pull_arrays_sooner(loop)
    os.environ[TASK_POLL_ENV] = f"{task_poll_s!r}"  # inherited by the SuperExec it starts
    print(
        f"fractofl: this SuperNode asks the coordinator for work every {poll_s:g} s when idle "
        f"(Flower's own wait: {FLOWER_IDLE_WAIT_S:g} s; deployment.member_poll_s), and its "
        f"SuperExec asks it for a ClientApp to start every {task_poll_s:g} s (Flower's: "
        f"{FLOWER_TASK_POLL_S:g} s; "
        "deployment.member_task_poll_s)",
        flush=True,
    )
    sys.argv = ["flower-supernode", *flower_arguments]
    flower_supernode()


if __name__ == "__main__":
    main()
