"""``fractofl serve deploy VERSION --endpoint NAME [--update]`` and ``fractofl serve delete NAME``.

Added to the ``serve`` command with ``register(serve_cmd.serve_actions(sub))``. The SageMaker
SDK and torch are imported only when one of these runs (they take seconds to import).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fractofl.cli.config import load_run_config
from fractofl.cli.in_use import endpoint_use, forget_use, record_use
from fractofl.cli.progress import Progress
from fractofl.core.config.run_config import RunConfig

EXIT_OK, EXIT_FAILED = 0, 1


def register(serve_actions: argparse._SubParsersAction) -> None:
    """Add ``deploy`` and ``delete`` to the actions of ``fractofl serve``."""
    deploy = serve_actions.add_parser(
        "deploy",
        help="upload a packaged version to S3 and deploy it to a SageMaker endpoint",
        description="Upload a packaged version to S3 and deploy it to a SageMaker real-time "
        "endpoint (settings: conf/serving/, e.g. serving.bucket=... serving.role_arn=...).",
    )
    deploy.add_argument(
        "version", help="number, vNNNNNN, latest or best (by registry.retention.best_metric)"
    )
    deploy.add_argument("--endpoint", required=True, metavar="NAME", help="endpoint name")
    deploy.add_argument(
        "--update",
        action="store_true",
        help="move the live endpoint NAME to VERSION without downtime",
    )
    deploy.add_argument(
        "--async",
        dest="asynchronous",
        action="store_true",
        help="an Asynchronous Inference endpoint: requests of up to 1 GB through S3 "
        "(serving.async_*_path), for full-resolution maps; query it with `predict --async`",
    )
    deploy.add_argument(
        "--artifact",
        type=Path,
        metavar="PATH",
        help="model.tar.gz to deploy (default: <serving.artifacts>/model-vNNNNNN.tar.gz)",
    )
    deploy.add_argument("overrides", nargs="*", help="Hydra overrides key=value")
    deploy.set_defaults(handler=_deploy, cfg=False)
    delete_help = "delete an endpoint and the configurations and models fractofl made for it"
    delete = serve_actions.add_parser("delete", help=delete_help, description=delete_help)
    delete.add_argument("endpoint", metavar="NAME", help="endpoint name")
    delete.add_argument("overrides", nargs="*", help="Hydra overrides key=value")
    delete.set_defaults(handler=_delete, cfg=False)


def _deploy(args: argparse.Namespace) -> int:
    from fractofl.serving.aws import DeployError
    from fractofl.serving.deploy import check_settings, deploy
    from fractofl.serving.package import artifact_name

    cfg = load_run_config(args.overrides)
    try:
        check_settings(
            cfg.serving, args.endpoint, args.asynchronous
        )  # settings first: they need no files
    except DeployError as exc:
        return _fail(str(exc))
    from fractofl.core.trust.registry import ModelRegistry
    from fractofl.core.trust.version_choice import chosen_version

    registry_root = Path(cfg.registry.root)
    version = chosen_version(ModelRegistry(registry_root), args.version, cfg.registry.retention)
    artifact = args.artifact or Path(cfg.serving.artifacts) / artifact_name(version)
    if args.artifact and not artifact.is_file():
        return _fail(f"--artifact {artifact} does not exist or is not a file")
    if not artifact.is_file():
        return _fail(
            f"no artifact {artifact} (serving.artifacts): run `fractofl serve package "
            f"{args.version}` first, or pass --artifact PATH"
        )
    trusted = Path(cfg.registry.trusted_public_key)
    if not trusted.is_file():
        print(
            f"fractofl: warning: no trusted public key at {trusted} "
            "(registry.trusted_public_key): the endpoint will check the weights' hash but "
            "not the model's signature",
            file=sys.stderr,
        )
    # Kept by retention from now on. A failed deploy keeps its pin (the endpoint may
    # exist in part) until `serve delete`; a successful one drops the endpoint's others.
    record_use(registry_root, version, endpoint_use(args.endpoint))
    try:
        done = deploy(
            cfg.serving,
            artifact,
            version,
            args.endpoint,
            update=args.update,
            asynchronous=args.asynchronous,
            trusted_public_key_pem=trusted.read_text() if trusted.is_file() else "",
            upload_progress=Progress(f"{artifact.name} bytes uploaded"),
        )
    except DeployError as exc:
        return _fail(str(exc))
    forget_use(registry_root, endpoint_use(args.endpoint), except_version=version)
    record_deployment(
        cfg,
        "deployed",
        endpoint=done.endpoint,
        version=version,
        update=bool(args.update),
        asynchronous=bool(args.asynchronous),
    )
    kind = "asynchronous endpoint" if args.asynchronous else "endpoint"
    print(
        f"{kind} {done.endpoint} is {done.status}, serving {version} "
        f"(model {done.model}, endpoint config {done.endpoint_config}, {done.model_data_url})"
    )
    return EXIT_OK


def _delete(args: argparse.Namespace) -> int:
    from fractofl.serving.aws import DeployError
    from fractofl.serving.undeploy import delete

    cfg = load_run_config(args.overrides)
    try:
        deleted = delete(cfg.serving, args.endpoint)
    except DeployError as exc:
        return _fail(str(exc))
    forget_use(Path(cfg.registry.root), endpoint_use(args.endpoint))  # retention may go on
    record_deployment(cfg, "endpoint-deleted", endpoint=args.endpoint, deleted=deleted)
    print("deleted " + "; ".join(deleted))
    return EXIT_OK


def _fail(message: str) -> int:
    print(f"fractofl: error: {message}", file=sys.stderr)
    return EXIT_FAILED


def record_deployment(cfg: RunConfig, kind: str, **values: object) -> None:
    """An entry in the coordinator's audit trail, when this machine is the coordinator
    (its ``deployment.state_dir`` exists): who deployed or deleted what."""
    from fractofl.server.audit_trail import CoordinatorAudit, coordinator_audit_path, who

    path = coordinator_audit_path(cfg)
    if path.parent.is_dir():
        CoordinatorAudit(path).record(kind, **values, **who())
