"""The coordinator's live round progress (rich) and its plain log line."""

from __future__ import annotations

import io
import logging
import math

from rich.console import Console

from fractofl.server.progress import RoundProgress
from fractofl.server.recorder import RoundRow


def _row(server_round: int, accuracy: float) -> RoundRow:
    return RoundRow(
        round=server_round,
        members_answered=3,
        mean_train_loss=0.5,
        test_accuracy=accuracy,
        test_macro_f1=accuracy,
        test_loss=1.0,
        member_val_accuracy=math.nan,
        config_mismatches=0,
        refused_updates=0,
        bytes_per_member=100.0,
        elapsed_s=2.0 * server_round,
        members_sampled=4,
    )


def test_live_progress_shows_round_members_loss_and_accuracy() -> None:
    # Prepare
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=140)
    progress = RoundProgress(total=5, done=1, live=True, console=console)
    # Execute
    progress.round_done(_row(2, 0.625))
    progress.close()
    # Assert: the bar reached round 2 of 5 with the round's facts.
    text = screen.getvalue()
    assert "2/5" in text
    assert "members 3/4 | loss 0.500 | acc 0.625" in text


def test_without_a_terminal_each_round_is_one_log_line() -> None:
    # The CLI stops "fractofl" records from reaching the root logger: listen on it directly.
    logger, lines = logging.getLogger("fractofl"), io.StringIO()
    handler, level = logging.StreamHandler(lines), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        progress = RoundProgress(total=5, live=False)
        progress.round_done(_row(3, 0.5))
        progress.close()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert "round   3/5 | members  3 | train loss 0.5000 | test acc 0.500" in lines.getvalue()
