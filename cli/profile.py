"""Settings typed once: the coordinator's deployment profile and a member's join settings.

``fractofl ca init`` and ``fractofl coordinator up`` save the ``deployment.*`` settings they
ran with in ``<deployment.state_dir>/deployment.yaml``; every later coordinator command
(``coordinator status | run | front-config``, ``member add | list | revoke``, ``ca issue``)
starts from them, so non-default addresses and folders are typed once. ``fractofl member
join`` saves its address, image folder and files in ``<deployment.member_dir>/join.yaml``
the same way. A setting given on the command line still wins, and the command says so. The
folders themselves are found where ``deployment.state_dir`` / ``deployment.member_dir``
say (``coordinator/`` and ``member/`` by default): the one setting to repeat when it is not
the default.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from fractofl.core.config.run_config import DeploymentConfig, RunConfig, RunConfigError, from_nested
from fractofl.core.files.atomic import atomic_write_bytes

log = logging.getLogger("fractofl")

COORDINATOR_PROFILE = "deployment.yaml"
MEMBER_PROFILE = "join.yaml"
PATH_SETTINGS = ("pki_dir", "state_dir", "member_dir")


class ProfileError(ValueError):
    """A saved profile cannot be read; the message names the file and what to do."""


def save_coordinator_profile(deployment: DeploymentConfig) -> Path:
    """Save ``deployment`` (folders made absolute) as the coordinator's profile."""
    values = dataclasses.asdict(deployment)
    for name in PATH_SETTINGS:
        values[name] = str(Path(values[name]).expanduser().resolve())
    path = Path(values["state_dir"]) / COORDINATOR_PROFILE
    return _write(path, values, "deployment settings of `fractofl coordinator up` and `ca init`")


def apply_coordinator_profile(cfg: RunConfig, overrides: Sequence[str]) -> RunConfig:
    """``cfg`` with the saved deployment settings in place of the defaults; settings on
    the command line (``overrides``) win, and both are said on the log."""
    path = Path(cfg.deployment.state_dir) / COORDINATOR_PROFILE
    saved = _read(path)
    if not saved:
        return cfg
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}
    current = dataclasses.asdict(cfg.deployment)
    merged, taken = dict(current), []
    for name, value in saved.items():
        if name not in current or _same(name, current[name], value):
            continue
        if f"deployment.{name}" in given:
            log.info(
                "deployment.%s=%s from the command line, not %s as saved in %s",
                name,
                current[name],
                value,
                path,
            )
            continue
        merged[name] = value
        taken.append(f"{name}={value}")
    if taken:
        log.info("deployment settings from %s: %s", path, ", ".join(taken))
    try:
        deployment = from_nested({"deployment": merged}).deployment
    except RunConfigError as exc:
        raise ProfileError(f"{path}: {exc}; fix or delete the file") from None
    return dataclasses.replace(cfg, deployment=deployment)


def _same(name: str, current: object, saved: object) -> bool:
    """Whether a saved setting says what the composed one says (a folder given relative
    and saved absolute is the same folder)."""
    if name in PATH_SETTINGS and isinstance(current, str) and isinstance(saved, str):
        return Path(current).expanduser().resolve() == Path(saved).expanduser().resolve()
    return current == saved


def coordinator_config(overrides: Sequence[str]) -> RunConfig:
    """The composed configuration of a coordinator command, from its saved profile on."""
    from fractofl.cli.config import load_run_config

    return apply_coordinator_profile(load_run_config(overrides, training=False), overrides)


def save_member_profile(member_dir: Path, settings: Mapping[str, Any]) -> Path:
    """Save a member's ``member join`` settings."""
    return _write(member_dir / MEMBER_PROFILE, dict(settings), "settings of `fractofl member join`")


def member_profile(member_dir: Path) -> dict[str, Any]:
    """A member's saved ``member join`` settings (empty when there are none)."""
    return _read(member_dir / MEMBER_PROFILE)


def _write(path: Path, values: dict[str, Any], what: str) -> Path:
    header = f"# The {what}, read by the next commands; delete it to start afresh.\n"
    text = header + yaml.safe_dump(values, sort_keys=False)
    atomic_write_bytes(path, text.encode())
    return path


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path} is not valid YAML ({exc}); fix or delete it") from None
    if not isinstance(values, dict):
        raise ProfileError(f"{path} should hold settings as `name: value` lines; fix or delete it")
    return values
