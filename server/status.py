"""``fractofl coordinator status``: is the SuperLink up, and does the front guard it?

The front is probed from the coordinator itself with a request a member must never get
through: a POST to the Control API. A front that works answers 403; anything else on
that port is reported as a problem.
"""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass

from fractofl.core.config.run_config import DeploymentConfig
from fractofl.server.front import FrontFiles, front_local_host
from fractofl.server.superlink import CoordinatorFiles, control_host, is_listening

PROBE_PATH = "/v1/control/list-runs"
PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Probe:
    """What a service answered, in a line."""

    address: str
    running: bool
    detail: str

    def __str__(self) -> str:
        return f"{self.address:<22} {'running' if self.running else 'not running'}" + (
            f": {self.detail}" if self.detail else ""
        )


def probe_superlink(cfg: DeploymentConfig) -> Probe:
    """Whether the SuperLink listens on its private address."""
    address = f"{cfg.superlink_host}:{cfg.superlink_port}"
    if is_listening(control_host(cfg), cfg.superlink_port):
        return Probe(address, True, "")
    return Probe(address, False, "start it with `fractofl coordinator up`")


def probe_front(cfg: DeploymentConfig, files: CoordinatorFiles) -> Probe:
    """Whether the front listens and refuses a Control API call (403)."""
    address = f"{cfg.front_host}:{cfg.front_port}"
    host = front_local_host(cfg)
    if not is_listening(host, cfg.front_port):
        return Probe(address, False, "members cannot reach the SuperLink (`coordinator up`)")
    try:
        status, scheme = _post_status(host, cfg.front_port, files), "TLS"
    except (ssl.SSLError, http.client.HTTPException, OSError):
        try:
            status, scheme = _post_status(host, cfg.front_port, None), "plain text"
        except (http.client.HTTPException, OSError) as exc:
            return Probe(address, True, f"PROBLEM: does not answer HTTP(S) ({exc})")
    if status == 403:
        access_log = FrontFiles.of(files).access_log
        return Probe(address, True, f"{scheme}, Control API refused (403); access log {access_log}")
    return Probe(
        address,
        True,
        f"PROBLEM: answered {status} to POST {PROBE_PATH}, not 403: is this port the "
        "SuperLink itself (`coordinator up --no-front`) or another proxy?",
    )


def _post_status(host: str, port: int, files: CoordinatorFiles | None) -> int:
    """The status of a POST to the Control API; TLS verified against the CA with
    ``files``, plain HTTP without."""
    connection: http.client.HTTPConnection
    if files is None:
        connection = http.client.HTTPConnection(host, port, timeout=PROBE_TIMEOUT_S)
    else:
        context = ssl.create_default_context(cafile=str(files.ca_cert))
        connection = http.client.HTTPSConnection(
            host, port, timeout=PROBE_TIMEOUT_S, context=context
        )
    try:
        connection.request("POST", PROBE_PATH, body=b"")
        return connection.getresponse().status
    finally:
        connection.close()
