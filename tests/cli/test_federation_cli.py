"""The real-federation commands refuse what cannot work with one clear line, before any
process starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_fractofl


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["coordinator", "up"], "run `fractofl ca init` and `fractofl ca issue"),
        (
            ["coordinator", "run", "data.root=nowhere", "deployment.connect_timeout_s=1"],
            "the coordinator's test set",
        ),
        (
            ["member", "join", "--superlink", "coordinator:9092", "--data", "missing"],
            "--data missing is not a folder",
        ),
        (
            ["member", "join", "--superlink", "coordinator", "--data", "."],
            "is not HOST:PORT",
        ),
        (
            ["member", "join", "--superlink", "coordinator:9092", "--data", "."],
            "--key member/member.key does not exist",
        ),
        (["member", "add", "nobody.pub", "--name", "org"], "nobody.pub does not exist"),
        (["simulate", "privacy.dp=true", "strategy=krum"], "privacy.dp=true needs a mean"),
    ],
)
def test_a_missing_file_or_bad_address_is_one_clear_line(
    args: list[str], message: str, tmp_path: Path
) -> None:
    # Execute
    result = run_fractofl(*args, cwd=tmp_path)
    # Assert
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr
    assert result.stderr.startswith("fractofl: error:") and "Traceback" not in result.stderr


def test_insecure_coordinator_warns_what_is_exposed(tmp_path: Path) -> None:
    # Execute: an address that cannot be bound, so that the SuperLink exits at once
    result = run_fractofl(
        "coordinator", "up", "--insecure", "deployment.superlink_host=192.0.2.1", cwd=tmp_path
    )
    # Assert
    assert "WARNING: --insecure" in result.stderr
    assert "join as a member" in result.stderr and "start runs" in result.stderr
    assert result.returncode != 0
