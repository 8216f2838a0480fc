"""The coordinator's side of a real federation on Flower's Deployment Engine.

``fractofl coordinator up`` runs ``flower-superlink`` on its private address (TLS with the
consortium CA's certificate, SuperNode authentication, a database so that registrations
survive a restart) behind the front (:mod:`fractofl.server.front`); the coordinator's own
Flower CLI (``flwr run``, ``flwr supernode register|unregister|list``) reaches it on
loopback through a connection named :data:`CONNECTION` in a private ``FLWR_HOME``
(``deployment.state_dir/flwr-home``).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from fractofl.core.config.run_config import DeploymentConfig
from fractofl.core.processes.flower_executables import flower_env, flower_tool
from fractofl.core.trust.pki import CA_CERT_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE

CONNECTION = "fractofl"
"""The Flower CLI connection (``[superlink.fractofl]`` in ``$FLWR_HOME/config.toml``)."""
LOOPBACK_HOSTS = ("0.0.0.0", "::", "127.0.0.1", "localhost")
DATABASE_FILE = "superlink.db"
IN_MEMORY_STORE = ":flwr-in-memory:"  # Flower's --database value for its in-memory store
FLWR_HOME_DIR = "flwr-home"


class DeploymentError(RuntimeError):
    """A real-federation command cannot go on: a missing file, a refused registration,
    a SuperLink that does not answer."""


@dataclass(frozen=True)
class CoordinatorFiles:
    """Where the coordinator keeps its certificates and the SuperLink's state."""

    pki_dir: Path
    state_dir: Path

    @classmethod
    def from_config(cls, cfg: DeploymentConfig) -> CoordinatorFiles:
        """Absolute paths, so that Flower's CLI (which needs them) gets them."""
        return cls(Path(cfg.pki_dir).resolve(), Path(cfg.state_dir).resolve())

    @property
    def ca_cert(self) -> Path:
        return self.pki_dir / CA_CERT_FILE

    @property
    def server_cert(self) -> Path:
        return self.pki_dir / SERVER_CERT_FILE

    @property
    def server_key(self) -> Path:
        return self.pki_dir / SERVER_KEY_FILE

    @property
    def database(self) -> Path:
        return self.state_dir / DATABASE_FILE

    @property
    def flwr_home(self) -> Path:
        return self.state_dir / FLWR_HOME_DIR

    def check_tls(self) -> None:
        """Refuse to start TLS without the CA's and the SuperLink's certificate."""
        missing = [p for p in (self.ca_cert, self.server_cert, self.server_key) if not p.is_file()]
        if missing:
            raise DeploymentError(
                f"missing {', '.join(str(p) for p in missing)}: run `fractofl ca init` and "
                "`fractofl ca issue --host <coordinator host name>` first (deployment.pki_dir), "
                "or pass --insecure for a plain-text test federation"
            )


def superlink_database(cfg: DeploymentConfig, files: CoordinatorFiles, insecure: bool) -> str:
    """Flower's ``--database`` for ``deployment.superlink_store``; DeploymentError for a
    value it does not know, or for ``memory`` with members' registrations to keep."""
    if cfg.superlink_store == "file":
        return str(files.database)
    if cfg.superlink_store != "memory":
        raise DeploymentError(
            f"deployment.superlink_store={cfg.superlink_store!r}: choose file or memory"
        )
    if not insecure:
        raise DeploymentError(
            "deployment.superlink_store=memory would lose the members' registrations when the "
            "SuperLink restarts: it is for plain-text test federations (--insecure); use "
            "deployment.superlink_store=file"
        )
    return IN_MEMORY_STORE


def superlink_command(cfg: DeploymentConfig, files: CoordinatorFiles, insecure: bool) -> list[str]:
    """``flower-superlink`` for ``deployment.superlink_host:superlink_port``: TLS and
    SuperNode authentication, or neither with ``insecure`` (Flower refuses
    authentication without TLS)."""
    command = [
        flower_tool("flower-superlink"),
        "--host",
        cfg.superlink_host,
        "--port",
        str(cfg.superlink_port),
        "--database",
        superlink_database(cfg, files, insecure),
        "--disable-runtime-dependency-installation",
    ]
    if insecure:
        return [*command, "--insecure"]
    files.check_tls()
    return [
        *command,
        "--ssl-ca-certfile",
        str(files.ca_cert),
        "--ssl-certfile",
        str(files.server_cert),
        "--ssl-keyfile",
        str(files.server_key),
        "--enable-supernode-auth",
    ]


def write_connection(files: CoordinatorFiles, cfg: DeploymentConfig, insecure: bool) -> Path:
    """The coordinator's Flower CLI connection to its SuperLink (on loopback, mostly)."""
    connection: dict[str, object] = {"address": f"{control_host(cfg)}:{cfg.superlink_port}"}
    if insecure:
        connection["insecure"] = True
    else:
        connection["root-certificates"] = str(files.ca_cert)
    files.flwr_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = files.flwr_home / "config.toml"
    path.write_text(tomli_w.dumps({"superlink": {"default": CONNECTION, CONNECTION: connection}}))
    return path


def control_host(cfg: DeploymentConfig) -> str:
    """Where the coordinator's own commands reach the SuperLink: loopback when it
    listens on every address, else the address it listens on."""
    return "127.0.0.1" if cfg.superlink_host in LOOPBACK_HOSTS else cfg.superlink_host


def wait_for_port(host: str, port: int, timeout_s: float) -> None:
    """Wait until something accepts connections on ``host:port``."""
    deadline = time.monotonic() + timeout_s
    while not is_listening(host, port):
        if time.monotonic() > deadline:
            raise DeploymentError(
                f"nothing answers on {host}:{port} after {timeout_s:.0f} s: is "
                "`fractofl coordinator up` running (deployment.superlink_port)?"
            )
        time.sleep(0.5)


def flwr_cli(files: CoordinatorFiles, *args: str, timeout_s: float = 120.0) -> str:
    """Run the Flower CLI against the coordinator's connection; its output, or a
    DeploymentError with what it said."""
    result = subprocess.run(
        [flower_tool("flwr"), *args],
        env=flower_env(files.flwr_home),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        said = (result.stdout + result.stderr).strip().splitlines()
        raise DeploymentError(
            f"`flwr {' '.join(args[:2])}` failed (exit {result.returncode}): "
            + (" / ".join(line.strip() for line in said[-3:]) or "no output")
        )
    return result.stdout


def flwr_json(files: CoordinatorFiles, *args: str) -> dict[str, Any]:
    """Run a Flower CLI command with ``--format json`` on the coordinator's connection; its
    reply, or a DeploymentError with Flower's message (it exits 0 on refusals)."""
    output = flwr_cli(files, *args, CONNECTION, "--format", "json")
    try:
        reply = json.loads(output)
    except ValueError:
        raise DeploymentError(f"`flwr {' '.join(args[:2])}` answered {output!r}") from None
    if not isinstance(reply, dict) or not reply.get("success"):
        said = str(reply.get("error-message", output) if isinstance(reply, dict) else output)
        last = said.strip().splitlines()[-1].strip() if said.strip() else "no reason given"
        raise DeploymentError(f"the SuperLink refused `flwr {' '.join(args[:2])}`: {last}")
    return reply


def register_member(
    files: CoordinatorFiles, cfg: DeploymentConfig, public_key: Path, name: str
) -> int:
    """Register a member's SuperNode public key with the SuperLink; its node id."""
    if not public_key.is_file():
        raise DeploymentError(f"no public key file {public_key}")
    wait_for_port(control_host(cfg), cfg.superlink_port, cfg.connect_timeout_s)
    reply = flwr_json(files, "supernode", "register", str(public_key.resolve()), "--name", name)
    try:
        return int(reply["node-id"])
    except (KeyError, TypeError, ValueError):
        raise DeploymentError(f"`flwr supernode register` answered {reply!r}") from None


def unregister_node(files: CoordinatorFiles, cfg: DeploymentConfig, node_id: int) -> None:
    """Unregister a SuperNode: the SuperLink refuses its key from now on and its running
    SuperNode exits."""
    wait_for_port(control_host(cfg), cfg.superlink_port, cfg.connect_timeout_s)
    flwr_json(files, "supernode", "unregister", str(node_id))


def node_statuses(files: CoordinatorFiles) -> dict[int, str]:
    """Every SuperNode the SuperLink knows, by node id: ``registered`` (never connected),
    ``online``, ``offline`` or ``unregistered``."""
    reply = flwr_json(files, "supernode", "list", "--verbose")
    return {int(node["node-id"]): str(node["status"]) for node in reply.get("nodes", [])}


def is_listening(host: str, port: int) -> bool:
    """Whether something accepts connections on ``host:port`` now."""
    try:
        with socket.create_connection((host, port), timeout=2.0):
            return True
    except OSError:
        return False
