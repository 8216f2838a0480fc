"""The coordinator's front: nginx between the members and the SuperLink.

Flower 1.42's SuperLink serves the Fleet API (``/v1/fleet/``, SuperNodes), the Control API
(``/v1/control/``: start runs, register SuperNodes, with no credentials in open-source
Flower) and the Runtime API (``/v1/runtime/``) on one port. The front listens on the public
address (``deployment.front_host:front_port``) with the SuperLink's certificate from the
consortium CA, forwards only ``POST /v1/fleet/<call>`` to the SuperLink on its private
loopback port over TLS verified against the CA, and answers everything else with 403.
It runs as our own nginx instance (``nginx -c CONF -p PREFIX``) whose files, temporary
paths included, are in ``deployment.state_dir/front``.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import uvicorn
from flwr.common.constant import FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE

from fractofl.core.config.run_config import DeploymentConfig
from fractofl.core.trust.pki import ALWAYS_INCLUDED_HOSTS, certificate_summary
from fractofl.server.superlink import CoordinatorFiles, DeploymentError

FRONT_DIR = "front"
PRIVATE_HOSTS = ("127.0.0.1", "localhost", "::1")
"""Where the SuperLink may listen behind the front: loopback only."""
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
"""Where Debian installs nginx; a non-root user's PATH usually lacks them."""
FLEET_CALL = "^/v1/fleet/[a-z][a-z-]*$"
"""The only request URIs forwarded, matched on the raw URI: no query, no dots, no escapes."""
UPSTREAM_NAME = ALWAYS_INCLUDED_HOSTS[0]
"""The DNS name the front verifies in the SuperLink's certificate: nginx 1.22 checks DNS
names only, not IP addresses, and every SuperLink certificate carries ``localhost``."""
UPSTREAM_KEEPALIVE = 16  # idle TLS connections to the SuperLink kept open for reuse
SUPERLINK_IDLE_CLOSE_S = int(
    inspect.signature(uvicorn.Config).parameters["timeout_keep_alive"].default
)
"""How long the SuperLink keeps an idle connection: Flower 1.42 serves the Fleet API with
uvicorn at its default ``timeout_keep_alive`` (5 s)."""
UPSTREAM_IDLE_S = max(1, SUPERLINK_IDLE_CLOSE_S - 1)
"""How long the front keeps an idle connection to the SuperLink: shorter than the
SuperLink, so that nginx never sends a request on a connection uvicorn is closing (nginx
answers that one 502, "upstream prematurely closed connection", and does not retry a
POST: seen once in a test round of ResNet-18 pieces)."""
WORKER_CONNECTIONS = 1024  # per worker; each member holds a few (one worker: the front benchmark)
MIB = 1 << 20
FLOWER_CHUNK_BYTES = FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE
"""Flower sends arrays in pieces of at most this size (5 MiB), one POST each; other
objects go whole and are smaller."""
MIN_BODY_MB = FLOWER_CHUNK_BYTES // MIB + 1  # one piece and its protobuf framing
PROXY_BUFFER_KB = 64
PROXY_BUFFERS = -(-FLOWER_CHUNK_BYTES // (PROXY_BUFFER_KB << 10)) + 1
"""Enough buffers to hold one piece of a reply in memory: with nginx's few small default
buffers, or none, a 5 MiB download crosses the front in thousands of small writes or via
a temporary file, several times slower (measured with bench/front_pieces.py's method)."""
PROXY_BUSY_BUFFERS_KB = 1024  # what may be on its way to the member while the rest arrives
REFUSED = "only the Fleet API (POST /v1/fleet/...) is served here"
TOO_LARGE = "request larger than the front allows (deployment.front_max_body_mb={})"
INSTALL_HINT = (
    "install Debian's nginx with `sudo apt-get install nginx` (or `bash "
    "scripts/install-nginx.sh`), or set deployment.nginx to its path"
)


class FrontError(DeploymentError):
    """The front cannot start: nginx missing, a setting that would expose the SuperLink,
    a configuration nginx refuses."""


@dataclass(frozen=True)
class FrontFiles:
    """The front's own nginx files under ``deployment.state_dir/front``."""

    root: Path

    @classmethod
    def of(cls, files: CoordinatorFiles) -> FrontFiles:
        return cls(files.state_dir / FRONT_DIR)

    @property
    def config(self) -> Path:
        return self.root / "nginx.conf"

    @property
    def access_log(self) -> Path:
        return self.root / "access.log"

    @property
    def error_log(self) -> Path:
        return self.root / "error.log"

    @property
    def pid(self) -> Path:
        return self.root / "nginx.pid"

    @property
    def temp(self) -> Path:
        return self.root / "tmp"

    def make(self) -> None:
        """Create the folder and nginx's temporary folders (it spools large bodies there)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.temp.mkdir(exist_ok=True, mode=0o700)


def find_nginx(cfg: DeploymentConfig) -> str:
    """The nginx executable ``deployment.nginx`` names, or a FrontError saying how to
    install it."""
    name = cfg.nginx
    found = shutil.which(name)
    if found is None and os.sep not in name:
        found = shutil.which(name, path=os.pathsep.join(SBIN_DIRS))
    if found is None:
        where = "" if os.sep in name else f" on PATH or in {', '.join(SBIN_DIRS)}"
        raise FrontError(
            f"nginx (deployment.nginx={name}) is not installed{where}: the coordinator's front "
            f"needs it; {INSTALL_HINT}. `fractofl coordinator up --no-front` runs without the "
            "front and exposes the SuperLink's Control API"
        )
    return found


def front_local_host(cfg: DeploymentConfig) -> str:
    """Where the coordinator itself reaches the front: loopback when it listens on every
    address."""
    return "127.0.0.1" if cfg.front_host in ("0.0.0.0", "::") else cfg.front_host


def check_front_settings(cfg: DeploymentConfig) -> None:
    """Refuse settings with which the front would not protect the SuperLink or would cut
    model uploads, naming the setting."""
    for setting, port in (("front_port", cfg.front_port), ("superlink_port", cfg.superlink_port)):
        if not 0 < port < 65536:
            raise FrontError(f"deployment.{setting}={port} is not a TCP port (1-65535)")
    if cfg.superlink_host not in PRIVATE_HOSTS:
        raise FrontError(
            f"deployment.superlink_host={cfg.superlink_host} would expose the SuperLink's "
            "Control API beside the front; keep it on 127.0.0.1 (the front forwards the Fleet "
            "API to it), or run `coordinator up --no-front` on purpose"
        )
    if cfg.front_port == cfg.superlink_port:
        raise FrontError(
            f"deployment.front_port and superlink_port are both {cfg.front_port}: give the "
            "SuperLink's private port another number"
        )
    if cfg.front_max_body_mb < MIN_BODY_MB:
        raise FrontError(
            f"deployment.front_max_body_mb={cfg.front_max_body_mb} is too small: Flower uploads "
            f"arrays in {FLOWER_CHUNK_BYTES // MIB} MiB pieces and a refused piece stalls the "
            f"round without an error; give at least {MIN_BODY_MB} (64 is the default)"
        )
    if cfg.front_timeout_s <= 0:
        raise FrontError(f"deployment.front_timeout_s={cfg.front_timeout_s} must be positive")


def check_upstream_certificate(files: CoordinatorFiles) -> None:
    """The SuperLink's certificate must name ``localhost``, which the front verifies."""
    names = cast(list[str], certificate_summary(files.server_cert)["subject_alternative_names"])
    if f"DNS:{UPSTREAM_NAME}" not in names:
        raise FrontError(
            f"{files.server_cert} does not name {UPSTREAM_NAME}, which the front checks on "
            "the SuperLink; issue it again with `fractofl ca issue --force`"
        )


def front_config(
    cfg: DeploymentConfig, files: CoordinatorFiles, insecure: bool, run_as_root: bool
) -> str:
    """nginx's configuration for the front: TLS on both sides, or plain text on both
    with ``insecure`` (a test federation). ``run_as_root``: keep nginx's workers as root,
    the owner of the state folder, instead of nginx's default ``nobody``."""
    front = FrontFiles.of(files)
    upstream = f"{_address(cfg.superlink_host)}:{cfg.superlink_port}"
    listen = f"{_address(cfg.front_host)}:{cfg.front_port}"
    timeout = f"{cfg.front_timeout_s:g}s"
    scheme = "http" if insecure else "https"
    tls_listen = "" if insecure else " ssl"
    server_tls = (
        ""
        if insecure
        else f"""
        ssl_certificate {files.server_cert};
        ssl_certificate_key {files.server_key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:fleet_tls:1m;"""
    )
    upstream_tls = (
        ""
        if insecure
        else f"""
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {files.ca_cert};
            proxy_ssl_name {UPSTREAM_NAME};
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;"""
    )
    user = "user root root;\n" if run_as_root else ""
    return f"""# fractofl's coordinator front (`fractofl coordinator front-config`): members reach
# only the SuperLink's Fleet API (POST /v1/fleet/<call>) on {upstream}; anything else,
# the Control API (runs, SuperNode registrations) and the Runtime API included, gets 403.
daemon off;
{user}worker_processes 1;
pid {front.pid};
error_log {front.error_log} warn;

events {{
    worker_connections {WORKER_CONNECTIONS};
}}

http {{
    server_tokens off;
    default_type application/json;
    # The member's address, what its own proxies claim, and the bytes both ways.
    log_format fleet '$time_iso8601 $remote_addr xff="$http_x_forwarded_for" "$request" '
                     '$status $request_length $bytes_sent $request_time';
    access_log {front.access_log} fleet;

    # Model pieces are up to {FLOWER_CHUNK_BYTES // MIB} MiB: accept them, keep them in memory
    # (uploads here, replies in the proxy buffers below).
    client_max_body_size {cfg.front_max_body_mb}m;
    client_body_buffer_size {cfg.front_max_body_mb}m;
    client_body_timeout {timeout};
    client_header_timeout {timeout};
    send_timeout {timeout};
    client_body_temp_path {front.temp}/client_body;
    proxy_temp_path {front.temp}/proxy;
    fastcgi_temp_path {front.temp}/fastcgi;
    uwsgi_temp_path {front.temp}/uwsgi;
    scgi_temp_path {front.temp}/scgi;

    upstream superlink {{
        server {upstream};
        keepalive {UPSTREAM_KEEPALIVE};
        keepalive_timeout {UPSTREAM_IDLE_S}s;
    }}

    server {{
        listen {listen}{tls_listen};{server_tls}
        error_page 403 @refused;
        error_page 413 @too_large;

        location /v1/fleet/ {{
            limit_except POST {{
                deny all;
            }}
            if ($request_uri !~ "{FLEET_CALL}") {{
                return 403;
            }}
            proxy_pass {scheme}://superlink;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffer_size {PROXY_BUFFER_KB}k;
            proxy_buffers {PROXY_BUFFERS} {PROXY_BUFFER_KB}k;
            proxy_busy_buffers_size {PROXY_BUSY_BUFFERS_KB}k;
            proxy_max_temp_file_size 0;
            proxy_connect_timeout {timeout};
            proxy_send_timeout {timeout};
            proxy_read_timeout {timeout};{upstream_tls}
        }}

        location / {{
            return 403;
        }}

        location @refused {{
            return 403 '{_json_reason(REFUSED)}';
        }}

        location @too_large {{
            return 413 '{_json_reason(TOO_LARGE.format(cfg.front_max_body_mb))}';
        }}
    }}
}}
"""


def nginx_command(nginx: str, front: FrontFiles) -> list[str]:
    """Our own nginx instance in the foreground (``daemon off`` is in the config)."""
    return [nginx, "-c", str(front.config), "-p", str(front.root), "-e", str(front.error_log)]


def write_front_config(text: str, front: FrontFiles, nginx: str) -> None:
    """Write the configuration and have nginx check it (``nginx -t``)."""
    front.make()
    front.config.write_text(text)
    result = subprocess.run(
        [*nginx_command(nginx, front), "-t", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        said = " / ".join(line.strip() for line in result.stderr.strip().splitlines()[-3:])
        raise FrontError(f"nginx refuses the front's configuration {front.config}: {said}")


def _json_reason(reason: str) -> str:
    return json.dumps({"reason": reason}) + "\\n"


def _address(host: str) -> str:
    return f"[{host}]" if ":" in host else host
