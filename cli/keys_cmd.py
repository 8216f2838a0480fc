"""``fractofl keys init``: create the coordinator's model-signing key pair."""

from __future__ import annotations

import argparse
from pathlib import Path

from fractofl.cli.config import compose_config, to_run_config
from fractofl.core.trust.signing import (
    create_key_pair,
    fingerprint,
    passphrase_from_env,
    public_pem,
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``keys init`` to the ``fractofl`` command."""
    keys = sub.add_parser("keys", help="the coordinator's model-signing keys")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    init = actions.add_parser(
        "init",
        help="create the Ed25519 key pair that signs published models",
        description="Create the coordinator's Ed25519 signing key pair and print the public "
        "key to distribute. The private key is encrypted with the passphrase in the "
        "environment variable --passphrase-env when it is set, and is always created 0600.",
    )
    init.add_argument("overrides", nargs="*", help="Hydra overrides (e.g. registry.private_key=x)")
    init.add_argument("--private-key", type=Path, help="default: registry.private_key")
    init.add_argument("--public-key", type=Path, help="default: registry.public_key")
    init.add_argument(
        "--passphrase-env", metavar="VAR", help="passphrase variable (registry.passphrase_env)"
    )
    init.set_defaults(handler=_init, cfg=False)


def _init(args: argparse.Namespace) -> int:
    registry = to_run_config(compose_config(args.overrides), training=False).registry
    private_path = args.private_key or Path(registry.private_key)
    public_path = args.public_key or Path(registry.public_key)
    variable = args.passphrase_env or registry.passphrase_env
    passphrase = passphrase_from_env(variable)
    public_key = create_key_pair(private_path, public_path, passphrase)
    protection = (
        f"encrypted with the passphrase in ${variable}"
        if passphrase
        else f"NOT encrypted (${variable} is unset); protected by its permissions only"
    )
    print(f"private key: {private_path} (mode 0600, {protection}); keep it secret")
    print(f"public key:  {public_path}; give it to every member as registry.trusted_public_key")
    print(f"fingerprint: {fingerprint(public_key)}")
    print(public_pem(public_key), end="")
    return 0
