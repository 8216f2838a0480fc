"""``fractofl models prune [--dry-run]`` and ``models unpin``: registry retention from the
command line, on real signed versions."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fractofl.cli.main import main
from fractofl.core.config.taxonomy import DEFAULT_CLASSES
from fractofl.core.model.architectures import build_model, default_preprocessing
from fractofl.core.model.checkpoint import Checkpoint
from fractofl.core.trust.pins import add_pin, read_pins
from fractofl.core.trust.registry import PUBLISH_PREFIX, ModelRegistry
from fractofl.core.trust.retention import REMOVING_PREFIX, STALE_PUBLISH_AGE_S
from fractofl.core.trust.signing import create_key_pair, load_private_key

# Coordinator test macro-F1 of versions 1..5: the best is version 2.
MACRO_F1 = (0.40, 0.95, 0.50, 0.60, 0.70)


def _checkpoint(round_number: int) -> Checkpoint:
    torch.manual_seed(round_number)
    f1 = MACRO_F1[round_number - 1]
    return Checkpoint(
        architecture="small_cnn",
        arch_args={"width": 8},
        classes=list(DEFAULT_CLASSES),
        preprocessing=default_preprocessing("small_cnn", 32),
        state_dict=build_model("small_cnn", 4, width=8).state_dict(),
        round=round_number,
        run_id="run-prune",
        metrics={"test_accuracy": f1, "test_macro_f1": f1, "test_loss": 1 - f1},
    )


@pytest.fixture
def options(tmp_path: Path) -> list[str]:
    """Five signed versions; returns the options that point ``models`` at them."""
    create_key_pair(tmp_path / "keys" / "c.key", tmp_path / "keys" / "c.pub", None)
    key = load_private_key(tmp_path / "keys" / "c.key", None)
    registry = ModelRegistry(tmp_path / "registry")
    for number in range(1, len(MACRO_F1) + 1):
        registry.publish(_checkpoint(number), config_digest="d", parent=None, key=key)
    return ["--registry", str(registry.root)]


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.name.endswith(".lock")}


def test_dry_run_says_why_each_version_stays_and_removes_nothing(
    options: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: version 3 is deployed
    root = tmp_path / "registry"
    add_pin(root, "v000003", "endpoint:fracto-prod")
    before = _files(root)
    capsys.readouterr()
    # Execute
    code = main(["models", "prune", "--dry-run", *options, "registry.retention.keep_last=2"])
    out = capsys.readouterr().out
    # Assert
    assert code == 0
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert lines[0] == (
        f"registry {root}: keeping the newest 2, the best by test_macro_f1 (max) and the "
        "versions in use"
    )
    assert lines[1].startswith("would remove v000001 (") and lines[1].endswith(" MB)")
    assert lines[2:5] == [
        "keep v000002 best test_macro_f1=0.95",
        "keep v000003 in use: endpoint:fracto-prod",
        "keep v000004 newest 2",
    ]
    assert lines[5] == "keep v000005 newest 2"
    assert lines[6].startswith("dry run: would remove 1 version(s), ")
    assert lines[6].endswith("; nothing was removed")
    assert _files(root) == before


def test_prune_removes_reports_bytes_and_the_rest_still_verifies(
    options: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: version 1 exported (pinned by the export), stale hidden folders around
    root, pub = tmp_path / "registry", ["--public-key", str(tmp_path / "keys" / "c.pub")]
    assert main(["models", "export", "1", str(tmp_path / "out"), *options, *pub]) == 0
    crashed = root / f"{PUBLISH_PREFIX}k2j4"
    crashed.mkdir()
    past = time.time() - STALE_PUBLISH_AGE_S - 1
    os.utime(crashed, (past, past))
    (root / f"{REMOVING_PREFIX}v000007-ab12cd34").mkdir()
    size = sum(p.stat().st_size for p in (root / "v000003").iterdir())
    capsys.readouterr()
    # Execute
    code = main(["models", "prune", *options, "registry.retention.keep_last=1"])
    out = capsys.readouterr().out
    verified = main(["models", "verify", "--all", *options, *pub])
    checked = capsys.readouterr().out
    # Assert
    assert code == 0
    assert ModelRegistry(root).version_numbers() == [1, 2, 5]
    assert f"removed {PUBLISH_PREFIX}k2j4 (left by a crashed publish or prune)" in out
    assert f"removed {REMOVING_PREFIX}v000007-ab12cd34" in out
    assert f"removed      v000003  ({size / 1e6:.1f} MB)" in out
    assert f"in use: export:{(tmp_path / 'out').resolve()}" in out
    assert "removed 2 version(s)" in out and "freed; kept 3" in out
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["v000001", "v000002", "v000005"]
    assert verified == 0
    assert [line.split(":")[0] for line in checked.splitlines()] == [
        "v000001",
        "v000002",
        "v000005",
    ]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("registry.retention.keep_last=-3", r"registry\.retention\.keep_last=-3 must be a whole"),
        ("registry.retention.keep_last=two", r"registry\.retention\.keep_last=two"),
        ("registry.retention.keep_last=1.5", r"keep_last=1\.5: .*could not be converted to Int"),
        ("registry.retention.best_mode=highest", r"registry\.retention\.best_mode='highest'"),
    ],
)
def test_bad_settings_are_configuration_errors_that_remove_nothing(
    options: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    override: str,
    message: str,
) -> None:
    before = _files(tmp_path / "registry")
    capsys.readouterr()
    assert main(["models", "prune", *options, override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fractofl: configuration error:")
    assert re.search(message, err), err
    assert _files(tmp_path / "registry") == before


def test_an_unknown_best_metric_says_which_ones_there_are(
    options: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _files(tmp_path / "registry")
    capsys.readouterr()
    code = main(["models", "prune", *options, "registry.retention.best_metric=f1"])
    err = capsys.readouterr().err
    assert code == 1
    assert "best_metric='f1': no version" in err
    assert "they carry test_accuracy, test_loss, test_macro_f1" in err
    assert _files(tmp_path / "registry") == before


def test_unpin_releases_exports_but_an_endpoint_only_by_name(
    options: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: version 3 is exported and deployed
    root = tmp_path / "registry"
    add_pin(root, "v000003", "export:/srv/v3")
    add_pin(root, "v000003", "endpoint:fracto-prod")
    capsys.readouterr()
    # Execute: a plain unpin, then the endpoint named
    plain = main(["models", "unpin", "3", *options])
    plain_out = capsys.readouterr().out
    left = [p.use for p in read_pins(root)]
    named = main(["models", "unpin", "v000003", "--use", "endpoint:fracto-prod", *options])
    named_out = capsys.readouterr().out
    pruned = main(["models", "prune", *options, "registry.retention.keep_last=1"])
    # Assert
    assert (plain, named, pruned) == (0, 0, 0)
    assert "unpinned v000003: export:/srv/v3" in plain_out
    assert "still in use: v000003 by endpoint:fracto-prod (`fractofl serve delete fracto-prod`" in (
        plain_out
    )
    assert left == ["endpoint:fracto-prod"]
    assert "unpinned v000003: endpoint:fracto-prod" in named_out
    assert read_pins(root) == []
    assert ModelRegistry(root).version_numbers() == [2, 5]


def test_a_version_served_locally_is_kept_while_it_is_served(
    options: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: `serve local` of version 3 (neither the newest nor the best) in a real process
    root = tmp_path / "registry"
    command = [str(Path(sys.executable).with_name("fractofl")), "serve", "local", "3"]
    overrides = [
        "--port",
        "0",
        f"registry.root={root}",
        f"registry.trusted_public_key={tmp_path / 'keys' / 'c.pub'}",
    ]
    server = subprocess.Popen(
        [*command, *overrides], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        started = server.stdout.readline()  # "serving v000003 ... at http://..."
        assert started.startswith("serving v000003"), server.stderr.read() if server.stderr else ""
        pins = read_pins(root)
        # Execute
        code = main(["models", "prune", *options, "registry.retention.keep_last=1"])
        out = capsys.readouterr().out
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    # Assert: kept while served, released when the server stopped
    assert code == 0
    assert [(p.version, p.kind, p.pid) for p in pins] == [("v000003", "local", server.pid)]
    assert f"keep         v000003  in use: {pins[0].use}" in out
    assert ModelRegistry(root).version_numbers() == [2, 3, 5]
    assert server.returncode == 0 and read_pins(root) == []
