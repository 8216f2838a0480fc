"""Registry retention: the newest, the best and the in-use versions kept, the others
removed crash-safely; stale hidden folders cleared; the in-use record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fractofl.core.config.run_config import RetentionConfig
from fractofl.core.config.taxonomy import DEFAULT_CLASSES
from fractofl.core.model.architectures import build_model, default_preprocessing
from fractofl.core.model.checkpoint import Checkpoint
from fractofl.core.trust.pins import (
    IN_USE_FILE,
    LOCK_FILE,
    PinsFileError,
    add_pin,
    pinned,
    read_pins,
    remove_pins,
)
from fractofl.core.trust.registry import PUBLISH_PREFIX, ModelRegistry, RegistryError
from fractofl.core.trust.retention import (
    REMOVING_PREFIX,
    STALE_PUBLISH_AGE_S,
    RetentionError,
    folder_bytes,
    plan_prune,
    prune,
    remove_stale_folders,
)

# Coordinator test macro-F1 of versions 1..6: the best is version 2.
MACRO_F1 = (0.50, 0.90, 0.60, 0.55, 0.60, 0.70)


def _checkpoint(round_number: int, metrics: dict[str, float]) -> Checkpoint:
    torch.manual_seed(round_number)
    return Checkpoint(
        architecture="small_cnn",
        arch_args={"width": 8},
        classes=list(DEFAULT_CLASSES),
        preprocessing=default_preprocessing("small_cnn", 32),
        state_dict=build_model("small_cnn", 4, width=8).state_dict(),
        round=round_number,
        run_id="run-retention",
        metrics=metrics,
    )


def _publish(registry: ModelRegistry, key: Ed25519PrivateKey, metrics: list[dict]) -> None:
    for number, values in enumerate(metrics, start=1):
        registry.publish(
            _checkpoint(number, values),
            config_digest="d",
            parent=number - 1 or None,
            key=key,
        )


def _tree(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its size (the empty lock file aside): what a dry
    run or a refused prune must leave alone."""
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and p.name != LOCK_FILE
    }


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def registry(tmp_path: Path, key: Ed25519PrivateKey) -> ModelRegistry:
    """Six signed versions; macro-F1 as in MACRO_F1, accuracy and loss alike."""
    registry = ModelRegistry(tmp_path / "registry")
    _publish(
        registry,
        key,
        [{"test_accuracy": f, "test_macro_f1": f, "test_loss": 1 - f} for f in MACRO_F1],
    )
    return registry


def test_prune_keeps_the_newest_the_best_and_those_in_use(
    registry: ModelRegistry, key: Ed25519PrivateKey
) -> None:
    # Prepare: version 3 is exported; keep the newest 2
    add_pin(registry.root, "v000003", "export:/srv/models/v3")
    sizes = {n: folder_bytes(registry.root / f"v{n:06d}") for n in (1, 4)}
    # Execute
    result = prune(registry, RetentionConfig(keep_last=2))
    # Assert
    assert registry.version_numbers() == [2, 3, 5, 6]
    assert [d.version for d in result.removed] == [1, 4]
    assert result.bytes_freed == sum(sizes.values()) > 0
    reasons = {d.version: d.reasons for d in result.plan.kept}
    assert reasons == {
        2: ("best test_macro_f1=0.9",),
        3: ("in use: export:/srv/models/v3",),
        5: ("newest 2",),
        6: ("newest 2",),
    }
    assert [p.name for p in registry.root.iterdir() if p.is_dir() and p.name[0] == "."] == []
    for number in registry.version_numbers():  # what stays still verifies
        assert registry.verify(number, key.public_key()).version == number


def test_a_dry_run_removes_nothing(registry: ModelRegistry) -> None:
    # Prepare
    before = _tree(registry.root)
    # Execute
    result = prune(registry, RetentionConfig(keep_last=1), dry_run=True)
    # Assert
    assert [d.version for d in result.plan.removals] == [1, 3, 4, 5]
    assert result.removed == () and result.bytes_freed == 0
    assert _tree(registry.root) == before


def test_best_by_a_lower_is_better_metric_and_a_version_without_it_is_never_best(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    # Prepare: version 1 carries no loss at all; version 2 has the lowest loss
    registry = ModelRegistry(tmp_path / "registry")
    _publish(registry, key, [{}, {"test_loss": 0.2}, {"test_loss": 0.9}, {"test_loss": 0.4}])
    retention = RetentionConfig(keep_last=1, best_metric="test_loss", best_mode="min")
    # Execute
    prune(registry, retention)
    # Assert
    assert registry.version_numbers() == [2, 4]


def test_keep_last_zero_keeps_every_version(registry: ModelRegistry) -> None:
    result = prune(registry, RetentionConfig(keep_last=0, best_metric="no_such_metric"))
    assert registry.version_numbers() == [1, 2, 3, 4, 5, 6] and result.removed == ()


def test_the_newest_and_only_version_is_never_removed(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    # Prepare: one version that is neither best by any metric nor in use
    registry = ModelRegistry(tmp_path / "registry")
    _publish(registry, key, [{}])
    # Execute
    result = prune(registry, RetentionConfig(keep_last=1, best_metric=""))
    # Assert
    assert registry.version_numbers() == [1]
    assert [d.reasons for d in result.plan.decisions] == [("newest 1",)]


def test_a_metric_no_version_has_is_refused_and_nothing_is_removed(
    registry: ModelRegistry,
) -> None:
    before = _tree(registry.root)
    with pytest.raises(
        RetentionError,
        match=r"best_metric='test_f1': no version .* carries it; they carry "
        r"test_accuracy, test_loss, test_macro_f1",
    ):
        prune(registry, RetentionConfig(keep_last=1, best_metric="test_f1"))
    assert _tree(registry.root) == before


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"keep_last": -1}, r"registry\.retention\.keep_last=-1 must be a whole number >= 0"),
        ({"keep_last": 2.5}, r"registry\.retention\.keep_last=2\.5 must be a whole number"),
        ({"keep_last": True}, r"registry\.retention\.keep_last=True must be a whole number"),
        ({"best_mode": "up"}, r"registry\.retention\.best_mode='up'; valid: max, min"),
    ],
)
def test_bad_settings_name_the_setting_and_remove_nothing(
    registry: ModelRegistry, settings: dict[str, object], message: str
) -> None:
    before = _tree(registry.root)
    with pytest.raises(RetentionError, match=message):
        prune(registry, RetentionConfig(**settings))  # type: ignore[arg-type]
    assert _tree(registry.root) == before


def test_an_unreadable_record_of_use_stops_the_prune(registry: ModelRegistry) -> None:
    # Prepare
    (registry.root / IN_USE_FILE).write_text("{not json")
    before = _tree(registry.root)
    # Execute / Assert
    with pytest.raises(PinsFileError, match=r"in-use\.json is unreadable"):
        prune(registry, RetentionConfig(keep_last=1))
    assert _tree(registry.root) == before


def test_a_prune_killed_after_the_rename_leaves_no_half_version(
    registry: ModelRegistry, key: Ed25519PrivateKey
) -> None:
    # Prepare: a real process that dies (os._exit) once the first version is renamed away
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        import fractofl.core.trust.retention as retention
        from fractofl.core.config.run_config import RetentionConfig
        from fractofl.core.trust.registry import ModelRegistry

        retention.shutil.rmtree = lambda *args, **kwargs: os._exit(9)
        retention.prune(ModelRegistry(Path({str(registry.root)!r})), RetentionConfig(keep_last=5))
        """
    )
    # Execute
    crashed = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    # Assert: version 1 is gone from the listing, its files sit in a hidden folder
    assert crashed.returncode == 9, crashed.stderr.decode()
    hidden = [p for p in registry.root.iterdir() if p.name.startswith(REMOVING_PREFIX)]
    assert [p.name[: len(REMOVING_PREFIX) + 7] for p in hidden] == [".removing-v000001"]
    assert (hidden[0] / "model.pt").is_file()  # a whole version, yet not listed
    assert registry.version_numbers() == [2, 3, 4, 5, 6]
    assert [m.version for m in registry.versions()] == [2, 3, 4, 5, 6]
    assert all(registry.verify(n, key.public_key()) for n in registry.version_numbers())
    # ... and the next sweep clears it
    assert remove_stale_folders(registry.root) == hidden
    assert not hidden[0].exists()


def test_stale_staging_folders_go_and_a_publish_in_progress_stays(
    registry: ModelRegistry,
) -> None:
    # Prepare: a crashed publish (untouched for longer than the limit), one in progress
    # (written just now) and a prune's leftover
    old, fresh = registry.root / f"{PUBLISH_PREFIX}crashed", registry.root / f"{PUBLISH_PREFIX}live"
    leftover = registry.root / f"{REMOVING_PREFIX}v000009-0a1b2c3d"
    for folder in (old, fresh, leftover):
        folder.mkdir()
        (folder / "model.pt").write_bytes(b"x" * 100)
    past = time.time() - STALE_PUBLISH_AGE_S - 60
    os.utime(old / "model.pt", (past, past))
    os.utime(old, (past, past))
    # Execute
    removed = remove_stale_folders(registry.root)
    # Assert
    assert sorted(p.name for p in removed) == sorted([old.name, leftover.name])
    assert fresh.is_dir() and not old.exists() and not leftover.exists()
    assert registry.version_numbers() == [1, 2, 3, 4, 5, 6]


def test_a_pin_lasts_unless_its_command_fails(registry: ModelRegistry) -> None:
    # Execute: one use that succeeds, one that fails
    with pinned(registry.root, "v000002", "export:/a"):
        pass
    with pytest.raises(OSError, match="disk full"), pinned(registry.root, "v000003", "export:/b"):
        raise OSError("disk full")
    # Assert
    assert [(p.version, p.use) for p in read_pins(registry.root)] == [("v000002", "export:/a")]
    assert json.loads((registry.root / IN_USE_FILE).read_text())["format"] == 1


def test_a_process_pin_holds_while_the_process_lives(registry: ModelRegistry) -> None:
    # Prepare: this process serves version 1; a process that has exited served version 3
    exited = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    with pinned(registry.root, "v000001", "local:me", held_by_process=True):
        add_pin(registry.root, "v000003", "local:gone", held_by_process=True)
        data = json.loads((registry.root / IN_USE_FILE).read_text())
        data["pins"][-1]["pid"] = int(exited.stdout)
        (registry.root / IN_USE_FILE).write_text(json.dumps(data))
        # Execute
        plan = plan_prune(registry, RetentionConfig(keep_last=1), read_pins(registry.root))
    # Assert
    assert [d.version for d in plan.kept] == [1, 2, 6]
    assert [p.use for p in read_pins(registry.root)] == ["local:gone"]  # mine went at exit


def test_pins_refuse_a_missing_version_and_are_removed_by_use(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="no version v000042"):
        add_pin(registry.root, "v000042", "endpoint:prod")
    add_pin(registry.root, "v000004", "endpoint:prod")
    add_pin(registry.root, "v000005", "endpoint:prod")
    removed = remove_pins(
        registry.root, lambda p: p.use == "endpoint:prod" and p.version != "v000005"
    )
    assert [p.version for p in removed] == ["v000004"]
    assert [p.version for p in read_pins(registry.root)] == ["v000005"]


def test_listing_ignores_hidden_folders_even_with_a_whole_version_inside(
    registry: ModelRegistry,
) -> None:
    (registry.root / "v000001").rename(registry.root / f"{REMOVING_PREFIX}v000001-00000000")
    (registry.root / "v000002").rename(registry.root / f"{PUBLISH_PREFIX}v000002")
    assert registry.version_numbers() == [3, 4, 5, 6]
    with pytest.raises(RegistryError, match="no version v000001"):
        registry.folder(1)
