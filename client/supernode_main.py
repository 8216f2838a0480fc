"""Flower's SuperNode, asking the coordinator for work every ``deployment.member_poll_s``.

Flower 1.42's SuperNode sleeps a literal 3 s whenever it asks the SuperLink for an
instruction and there is none (``flwr/supernode/start_client_internal.py``), and 0.5 s
at a time while its ClientApp works. A round sends each member two instructions (train,
then evaluate), each a few seconds after the member's previous reply, so every member
waits 1.5 s on average per instruction, and a round waits for the slowest of them
(``bench/RESULTS.md``, members). Flower has no setting for it; this entry point caps every
wait of that module's loop at the member's setting and then runs Flower's own
``flower-supernode`` unchanged, with the arguments it was given.

Run as ``python -m fractofl.client.supernode_main --poll-s S -- <flower-supernode args>``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from types import ModuleType

FLOWER_IDLE_WAIT_S = 3.0  # Flower 1.42's wait between asks when it got no instruction
POLL_FLAG = "--poll-s"


class PollSettingError(ValueError):
    """``deployment.member_poll_s`` is not a wait this entry point can set."""


def check_poll_s(poll_s: float) -> float:
    """``poll_s`` if it is above 0 and at most Flower's own 3 s, else an error naming the
    setting."""
    if not isinstance(poll_s, int | float) or math.isnan(poll_s) or not 0 < poll_s <= 3.0:
        raise PollSettingError(
            f"deployment.member_poll_s={poll_s!r} must be above 0 and at most "
            f"{FLOWER_IDLE_WAIT_S:g} (Flower's own wait between asks); 0.5 is the default"
        )
    return float(poll_s)


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


def split_arguments(argv: Sequence[str]) -> tuple[float, list[str]]:
    """The poll interval and Flower's own arguments (everything after ``--``)."""
    parser = argparse.ArgumentParser(prog="python -m fractofl.client.supernode_main")
    parser.add_argument(POLL_FLAG, dest="poll_s", type=float, required=True)
    parser.add_argument("flower", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    flower = list(args.flower)
    if flower[:1] == ["--"]:
        flower = flower[1:]
    return check_poll_s(args.poll_s), flower


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``flower-supernode`` with the given arguments and its waits capped."""
    poll_s, flower_arguments = split_arguments(sys.argv[1:] if argv is None else argv)
    import flwr.supernode.start_client_internal as loop
    from flwr.supernode.cli import flower_supernode

    cap_supernode_waits(loop, poll_s)
    print(
        f"fractofl: this SuperNode asks the coordinator for work every {poll_s:g} s when idle "
        f"(Flower's own wait: {FLOWER_IDLE_WAIT_S:g} s; deployment.member_poll_s)",
        flush=True,
    )
    sys.argv = ["flower-supernode", *flower_arguments]
    flower_supernode()


if __name__ == "__main__":
    main()
