"""Streaming aggregation through the real ``fractofl`` command: what cannot stream is
refused before a run starts. (A streamed and a gathered run ending with the same model, bit
for bit: tests/server/test_byzantine.py, which shares its attacked run.)"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import easy_overrides, run_fractofl


def test_streaming_a_robust_strategy_is_refused_before_the_run(
    easy_dataset: Path, tmp_path: Path
) -> None:
    result = run_fractofl(
        "simulate",
        *easy_overrides(easy_dataset, tmp_path / "runs"),
        "strategy=krum",
        "updates.aggregation=streamed",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "updates.aggregation=streamed is exact only for fedavg" in result.stderr
    assert "strategy='krum' compares all of a round's updates at once" in result.stderr
    assert not (tmp_path / "runs").exists()
