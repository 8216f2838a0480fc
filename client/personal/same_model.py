"""A member's own model is only comparable with a global version when it is the same
network on the same input (architecture, its arguments, classes and preprocessing) and
is scored on the same validation images (``seed`` and ``data.val_fraction`` split them)."""

from __future__ import annotations

import json
from typing import Any

from fractofl.core.config.run_config import RunConfig
from fractofl.core.model.architectures import effective_arguments
from fractofl.core.model.factory import preprocessing_for
from fractofl.core.trust.registry import (
    SPLIT_SEED_METRIC,
    VAL_FRACTION_METRIC,
    VersionMetadata,
)


class ModelMismatchError(ValueError):
    """The member's configuration builds another model than the global version's, or
    splits its images otherwise."""


# Preprocessing fields and the setting that decides each; the others follow model.name.
_PREPROCESSING_SETTINGS = {
    "image_size": "model.image_size",
    "pixel_size_um": "model.pixel_size_um",
    "tile_grid": "model.tile_grid",
    "augmentation": "train.augment",
}


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _override(setting: str, value: Any) -> str:
    if isinstance(value, list):
        text = "+".join(value) if setting == "train.augment" else "[" + ",".join(value) + "]"
        return f"{setting}={text or 'none'}"
    return f"{setting}={value}"


def model_differences(cfg: RunConfig, meta: VersionMetadata) -> list[str]:
    """Each setting in which ``cfg`` differs from the global version, with the override
    that makes it the same; empty when they agree. Arguments left at the network's
    default count as given with that value."""
    found: list[str] = []

    def differs(setting: str, run: Any, own: Any, fix: str = "") -> None:
        if _plain(run) != _plain(own):
            fix = fix or _override(setting, _plain(run))
            found.append(f"{setting}: the run's {run!r}, this one's {own!r} ({fix})")

    if meta.architecture != cfg.model.name:
        differs("model.name", meta.architecture, cfg.model.name, f"model={meta.architecture}")
    else:
        run_args = effective_arguments(meta.architecture, meta.arch_args)
        own_args = effective_arguments(cfg.model.name, dict(cfg.model.args))
        for key in sorted(set(run_args) | set(own_args)):
            differs(f"model.args.{key}", run_args.get(key), own_args.get(key))
    differs("data.classes", list(meta.classes), list(cfg.data.classes))
    # The split of the member's images: other validation images could be ones the global
    # model trained on. Versions published before it was recorded cannot be checked.
    if SPLIT_SEED_METRIC in meta.metrics:
        differs("seed", int(meta.metrics[SPLIT_SEED_METRIC]), cfg.seed)
    if VAL_FRACTION_METRIC in meta.metrics:
        differs("data.val_fraction", meta.metrics[VAL_FRACTION_METRIC], cfg.data.val_fraction)
    own = preprocessing_for(cfg).to_dict()
    for key in sorted(set(meta.preprocessing) | set(own)):
        if key in _PREPROCESSING_SETTINGS:
            differs(_PREPROCESSING_SETTINGS[key], meta.preprocessing.get(key), own.get(key))
        elif meta.architecture == cfg.model.name:  # otherwise they follow model.name
            differs(
                f"preprocessing {key}",
                meta.preprocessing.get(key),
                own.get(key),
                "it follows model.name",
            )
    return found


def check_same_model(cfg: RunConfig, meta: VersionMetadata, what: str) -> None:
    """ModelMismatchError listing every difference (and its fix) when ``cfg`` would
    build another model than global version ``meta``."""
    found = model_differences(cfg, meta)
    if found:
        raise ModelMismatchError(
            f"{what} must use the model and preprocessing of global version {meta.name} to "
            "be compared with it; these settings differ:\n  " + "\n  ".join(found)
        )
