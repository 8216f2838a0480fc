"""Following a run from its metrics file, as ``coordinator run`` follows a deployed one."""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path

import pytest

from fractofl.server.recorder import RoundRow
from fractofl.server.reporting import write_metrics
from fractofl.server.run_watch import RunWatcher, finished_table, rows_of


def _row(server_round: int) -> RoundRow:
    return RoundRow(
        round=server_round,
        members_answered=3 if server_round else 0,
        mean_train_loss=math.nan if server_round == 0 else 1.0 / server_round,
        test_accuracy=0.5 + server_round / 10,
        test_macro_f1=0.4,
        test_loss=1.0,
        member_val_accuracy=math.nan,
        config_mismatches=0,
        refused_updates=0,
        bytes_per_member=math.nan,
        elapsed_s=2.0 * server_round,
        members_sampled=3,
    )


def test_each_round_is_shown_once_as_the_server_app_writes_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: a "ServerApp" in another thread rewriting metrics.csv round by round, the
    # way the run folder does (atomically, the whole file each time)
    rows = [_row(r) for r in range(4)]

    def shown() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("round")]

    def server_app() -> None:
        for done in range(1, len(rows) + 1):
            write_metrics(rows[:done], tmp_path / "metrics.csv")
            deadline = time.monotonic() + 10
            while len(shown()) < done and time.monotonic() < deadline:
                time.sleep(0.01)  # let the watcher show this round before the next

    # Execute
    with caplog.at_level(logging.INFO, logger="fractofl"):
        watcher = RunWatcher(tmp_path, rounds=3, interval_s=0.02).start()
        writer = threading.Thread(target=server_app)
        writer.start()
        writer.join()
        watcher.stop()
    # Assert: rounds 0..3 once each, in order, with the simulation's progress line
    lines = shown()
    assert [line[:11] for line in lines] == [f"round   {r}/3" for r in range(4)]
    assert lines[0].startswith("round   0/3 | members  0 | train loss   -")
    assert lines[3].startswith("round   3/3 | members  3 | train loss 0.3333 | test acc 0.800")


def test_rounds_already_in_the_folder_are_not_shown_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: a resumed run that had finished round 1
    write_metrics([_row(0), _row(1)], tmp_path / "metrics.csv")
    # Execute
    with caplog.at_level(logging.INFO, logger="fractofl"):
        watcher = RunWatcher(tmp_path, rounds=2, interval_s=0.02).start()
        write_metrics([_row(0), _row(1), _row(2)], tmp_path / "metrics.csv")
        watcher.stop()
    # Assert
    shown = [r.getMessage()[:11] for r in caplog.records if r.getMessage().startswith("round")]
    assert shown == ["round   2/2"]


def test_the_closing_table_reads_the_run_folder(tmp_path: Path) -> None:
    # Prepare
    write_metrics([_row(0), _row(1)], tmp_path / "metrics.csv")
    # Execute
    table = finished_table(tmp_path)
    # Assert
    assert [row.round for row in rows_of(tmp_path)] == [0, 1]
    assert table.splitlines()[0] == f"federated run finished; run folder {tmp_path}"
    assert table.splitlines()[-1].split() == ["1", "3", "1.0000", "0.600", "0.400"]
