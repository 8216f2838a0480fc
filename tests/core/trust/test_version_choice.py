"""``best`` names the version with the best value of the configured metric in its signed
metadata, the one retention keeps; a metric nobody carries is refused, naming those
that are carried."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fractofl.core.config.run_config import RetentionConfig
from fractofl.core.trust.registry import ModelRegistry, RegistryError
from fractofl.core.trust.retention import prune
from fractofl.core.trust.version_choice import chosen_version
from tests.core.trust.test_registry_retention import _publish

# coordinator test macro-F1 and the worst member's accuracy disagree on the best version
VERSIONS = [
    {"test_macro_f1": 0.70, "member_min_val_accuracy": 0.40},
    {"test_macro_f1": 0.86, "member_min_val_accuracy": 0.52},  # best on the test set
    {"test_macro_f1": 0.81, "member_min_val_accuracy": 0.74},  # no member left behind
    {"test_macro_f1": 0.84},  # a version published before members reported
]


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "registry")
    _publish(registry, Ed25519PrivateKey.generate(), VERSIONS)
    return registry


def test_best_follows_the_configured_metric_and_is_what_retention_keeps(
    registry: ModelRegistry,
) -> None:
    # Prepare
    by_test = RetentionConfig(keep_last=1, best_metric="test_macro_f1")
    by_worst_member = RetentionConfig(keep_last=1, best_metric="member_min_val_accuracy")
    # Execute
    chosen = [chosen_version(registry, "best", r) for r in (by_test, by_worst_member)]
    plain = [chosen_version(registry, v, by_test) for v in ("latest", 1, "v000003")]
    kept = prune(registry, by_worst_member, dry_run=True).plan.kept
    # Assert
    assert chosen == ["v000002", "v000003"]
    assert plain == ["v000004", "v000001", "v000003"]
    assert {d.version for d in kept} == {3, 4}  # the best and the newest


def test_best_by_a_metric_no_version_carries_or_by_none_is_refused_saying_why(
    registry: ModelRegistry,
) -> None:
    # Execute
    with pytest.raises(RegistryError) as unknown:
        chosen_version(registry, "best", RetentionConfig(best_metric="member_min_val_f1"))
    with pytest.raises(RegistryError) as unset:
        chosen_version(registry, "best", RetentionConfig(best_metric=""))
    with pytest.raises(RegistryError) as empty:
        chosen_version(ModelRegistry(registry.root.parent / "none"), "best", RetentionConfig())
    # Assert
    assert "no version in" in str(unknown.value)
    assert "member_min_val_accuracy, test_macro_f1" in str(unknown.value)
    assert "registry.retention.best_metric is empty" in str(unset.value)
    assert "has no versions; publish one first" in str(empty.value)
