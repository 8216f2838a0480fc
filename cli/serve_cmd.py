"""``fractofl serve package | local | deploy | delete``: artifacts, local and SageMaker endpoints.

``package`` and ``local`` live here; ``deploy`` and ``delete`` in
:mod:`fractofl.cli.serve_deploy_cmd`, registered on the same ``serve`` parser (see
:func:`serve_actions`, which any module may call, in any order).
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from fractofl.cli import serve_deploy_cmd
from fractofl.cli.config import ConfigError, load_run_config
from fractofl.cli.in_use import local_use, path_use, recording_use
from fractofl.core.config.run_config import RunConfig

# The registry and the endpoint import torch: imported where a command uses them, so that
# the `fractofl` command starts without torch.
if TYPE_CHECKING:
    from fractofl.core.trust.registry import ModelRegistry

LATEST = "latest"


def serve_actions(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The ``serve`` command's sub-parsers action, creating ``serve`` on first use."""
    serve = sub.choices.get("serve")
    if serve is None:
        serve = sub.add_parser(
            "serve", help="package, serve locally or deploy a published model version"
        )
        serve.add_subparsers(dest="serve_command", required=True, metavar="ACTION")
    for action in serve._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError("the serve parser has no sub-commands")  # unreachable


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``serve package | local | deploy | delete`` to the ``fractofl`` command."""
    actions = serve_actions(sub)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = actions.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument(
            "targets",
            nargs="*",
            metavar="VERSION",
            help="number, vNNNNNN, latest (default) or best (by registry.retention.best_metric); "
            "Hydra overrides key=value may follow",
        )
        cmd.set_defaults(cfg=False, overrides=[])
        return cmd

    action(
        "package", "verify a version and write its SageMaker model.tar.gz to serving.artifacts"
    ).set_defaults(handler=_package)
    local = action(
        "local", "verify a version and serve it with SageMaker's contract (/ping, /invocations)"
    )
    local.add_argument("--port", type=int, help="port (default serving.port; 0: any free one)")
    local.add_argument("--host", help="address to listen on (default serving.host)")
    local.set_defaults(handler=_local)
    serve_deploy_cmd.register(actions)


def split_targets(targets: Sequence[str], extra: Sequence[str]) -> tuple[str, list[str]]:
    """The one VERSION among ``targets`` (default latest) and the overrides."""
    versions = [t for t in targets if "=" not in t]
    if len(versions) > 1:
        raise ConfigError(f"give one VERSION, not {len(versions)}: {' '.join(versions)}")
    return (versions[0] if versions else LATEST), [*(t for t in targets if "=" in t), *extra]


def _open(args: argparse.Namespace) -> tuple[RunConfig, str, ModelRegistry]:
    version, overrides = split_targets(args.targets, args.overrides)
    from fractofl.core.trust.registry import ModelRegistry

    cfg = load_run_config(overrides)
    return cfg, version, ModelRegistry(Path(cfg.registry.root))


def _package(args: argparse.Namespace) -> int:
    from fractofl.core.trust.signing import load_public_key
    from fractofl.core.trust.version_choice import chosen_version
    from fractofl.serving.package import artifact_name, image_bounds_of, package_version

    cfg, version, registry = _open(args)
    trusted = load_public_key(Path(cfg.registry.trusted_public_key))
    name = chosen_version(registry, version, cfg.registry.retention)
    out = Path(cfg.serving.artifacts)
    # Kept by retention: `serve deploy` needs the version in the registry too.
    with recording_use(registry.root, name, path_use("package", out / artifact_name(name))):
        artifact = package_version(
            registry,
            name,
            trusted,
            out,
            cfg.serving.min_confidence,
            image_bounds_of(cfg.serving),
        )
    print(
        f"packaged {artifact.version} (signature verified): {artifact.path}\n"
        f"{artifact.size} bytes, sha256 {artifact.sha256}"
    )
    return 0


def _local(args: argparse.Namespace) -> int:
    from fractofl.core.trust.signing import load_public_key
    from fractofl.core.trust.version_choice import chosen_version
    from fractofl.serving.local_endpoint import EndpointSettings
    from fractofl.serving.serve_local import start_local_endpoint

    cfg, version, registry = _open(args)
    trusted = load_public_key(Path(cfg.registry.trusted_public_key))
    serving = replace(
        cfg.serving,
        port=cfg.serving.port if args.port is None else args.port,
        host=args.host or cfg.serving.host,
    )
    api_key = os.environ.get(serving.api_key_env, "") if serving.api_key_env else ""
    settings = EndpointSettings.from_config(serving, api_key or None)
    signal.signal(signal.SIGTERM, _interrupt)  # stop as on Ctrl-C: the temporary folder goes
    name = chosen_version(registry, version, cfg.registry.retention)
    try:
        with (
            # kept by retention while this process serves it
            recording_use(registry.root, name, local_use(), held_by_process=True),
            tempfile.TemporaryDirectory(prefix="fractofl-serve-") as workdir,
        ):
            endpoint = start_local_endpoint(registry, name, trusted, settings, Path(workdir))
            key_note = f"API key from ${serving.api_key_env}" if api_key else "no API key"
            page_note = f"; web page {endpoint.url}/" if settings.web_page else ""
            print(
                f"serving {endpoint.handlers.version} (signature verified) at {endpoint.url}: "
                f"GET /ping, POST /invocations and /endpoints/{settings.endpoint_name}/"
                f"invocations{page_note}; {key_note}; Ctrl-C stops",
                flush=True,
            )
            try:
                endpoint.serve_forever()
            finally:
                endpoint.server_close()
    except KeyboardInterrupt:
        pass
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
