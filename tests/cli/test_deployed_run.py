"""Why a deployed run ended, read from the end of Flower's log."""

from __future__ import annotations

from pathlib import Path

from fractofl.cli.deployed_run import failure_reason, resume_command

# The end of `flwr run --stream` when the coordinator's machine died (seen in the tests).
LOST_SUPERLINK = """\
\x1b[92mINFO \x1b[0m:      configure_evaluate: Sampled 1 nodes (out of 1)
\x1b[92mINFO \x1b[0m:      aggregate_evaluate: Received 1 results and 0 failures
╭─ Error ──────────────────────────────────────────────────────────────────────╮
│ Connection to the SuperLink is unavailable. Please check your network        │
│ connection and 'address' in the SuperLink connection configuration.          │
╰──────────────────────────────────────────────────────────────────────────────╯
"""
# A ServerApp that raised: Flower logs the traceback.
SERVER_APP_RAISED = """\
\x1b[91mERROR \x1b[0m:     ServerApp thread raised an exception: round 3: fewer than ...
Traceback (most recent call last):
  File "/srv/fractofl/server/coordinator.py", line 186, in run_federated
    raise NotEnoughMembersError(f"{exc}. {then}") from None
fractofl.server.errors.NotEnoughMembersError: round 3: fewer than 2 members answered
\x1b[92mINFO \x1b[0m:      Run finished
"""


def test_flowers_error_box_is_the_reason() -> None:
    # Execute / Assert
    assert failure_reason(LOST_SUPERLINK.splitlines()) == (
        "Connection to the SuperLink is unavailable. Please check your network connection "
        "and 'address' in the SuperLink connection configuration."
    )


def test_a_server_app_exception_is_the_reason() -> None:
    # Execute / Assert
    assert failure_reason(SERVER_APP_RAISED.splitlines()) == (
        "NotEnoughMembersError: round 3: fewer than 2 members answered"
    )


def test_the_last_one_wins_and_a_quiet_log_has_none() -> None:
    # Prepare
    both = (SERVER_APP_RAISED + LOST_SUPERLINK).splitlines()
    # Execute / Assert
    assert failure_reason(both).startswith("Connection to the SuperLink is unavailable")
    assert failure_reason(["INFO : round 1", "INFO : done"]) is None
    assert resume_command(Path("runs/x")) == "fractofl coordinator resume runs/x"
