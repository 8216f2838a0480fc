"""Which registry version a command means: a number, ``vNNNNNN``, ``latest`` or ``best``.

``best`` is the version with the best value of ``registry.retention.best_metric`` in its
signed metadata (``best_mode`` max or min; the newest among equals), the same version
retention always keeps: the coordinator test set's macro-F1 by default, or
``member_min_val_accuracy`` (the worst member's accuracy on its own validation split) so
that no member is left behind. A version without the metric is never the best.
"""

from __future__ import annotations

from fractofl.core.config.run_config import RetentionConfig, RunConfigError, check_retention
from fractofl.core.trust.registry import ModelRegistry, RegistryError
from fractofl.core.trust.retention import best_version

BEST = "best"


def chosen_version(registry: ModelRegistry, version: int | str, retention: RetentionConfig) -> str:
    """The folder name (``v000007``) of ``version``; RegistryError naming what to do when
    there is no such version, or no best one."""
    if version != BEST:
        return registry.folder(version).name
    if not retention.best_metric:
        raise RegistryError(
            "registry.retention.best_metric is empty, so no version is the best: set it "
            "(e.g. test_macro_f1 or member_min_val_accuracy) or name a version"
        )
    try:
        check_retention(retention)
    except RunConfigError as exc:
        raise RegistryError(str(exc)) from None
    best = best_version(registry, registry.versions(), retention)
    if best is None:
        raise RegistryError(f"registry {registry.root} has no versions; publish one first")
    return best.name
