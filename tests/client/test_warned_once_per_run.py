"""A member's warning that holds every round (its validation split lacks classes) is said
once per run, and again when it changes."""

from __future__ import annotations

import logging

import pytest
from flwr.app import Context, RecordDict

from fractofl.client.app import warn_once_per_run


def test_a_warning_is_said_once_per_run_and_again_when_it_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare: one run's Context, kept between messages as Flower keeps it
    context = Context(1, 1, {}, RecordDict(), {})
    other_run = Context(2, 1, {}, RecordDict(), {})
    lacks_two = "this member's 23 validation image(s) hold no cleavage, intergranular"
    lacks_one = "this member's 24 validation image(s) hold no cleavage"
    # Execute: three rounds with the same gap, then the folder changes, then another run
    with caplog.at_level(logging.WARNING, logger="fractofl"):
        for warning in (lacks_two, lacks_two, lacks_two, lacks_one, lacks_one):
            warn_once_per_run(context, warning)
        warn_once_per_run(other_run, lacks_one)
    # Assert
    said = [record.getMessage() for record in caplog.records]
    assert said == [lacks_two, lacks_one, lacks_one]
