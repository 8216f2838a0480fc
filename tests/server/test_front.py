"""The front's nginx configuration: rendered from deployment settings, checked by the
real nginx (``nginx -t``), and refused with the setting named when it would not protect
the SuperLink."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fractofl.core.config.run_config import DeploymentConfig
from fractofl.core.trust.pki import create_ca, issue_server_certificate
from fractofl.server.front import (
    SUPERLINK_IDLE_CLOSE_S,
    UPSTREAM_IDLE_S,
    FrontError,
    FrontFiles,
    check_front_settings,
    check_upstream_certificate,
    find_nginx,
    front_config,
    write_front_config,
)
from fractofl.server.superlink import CoordinatorFiles


@pytest.fixture
def coordinator(tmp_path: Path) -> tuple[DeploymentConfig, CoordinatorFiles]:
    """Settings with their own ports, limits and timeouts, and a CA with its certificate."""
    create_ca(tmp_path / "pki", "test CA", days=2)
    issue_server_certificate(tmp_path / "pki", ["coordinator.example.org"], days=2)
    cfg = DeploymentConfig(
        pki_dir=str(tmp_path / "pki"),
        state_dir=str(tmp_path / "state"),
        front_host="0.0.0.0",
        front_port=19443,
        front_max_body_mb=48,
        front_timeout_s=75,
        superlink_port=19093,
    )
    return cfg, CoordinatorFiles.from_config(cfg)


def test_the_front_forwards_only_post_fleet_calls_over_verified_tls(
    coordinator: tuple[DeploymentConfig, CoordinatorFiles],
) -> None:
    # Prepare
    cfg, files = coordinator
    front = FrontFiles.of(files)
    # Execute
    text = front_config(cfg, files, insecure=False, run_as_root=False)
    write_front_config(text, front, find_nginx(cfg))  # runs `nginx -t`
    # Assert: the settings reach nginx, the upstream is verified against the CA
    assert "listen 0.0.0.0:19443 ssl;" in text
    assert "server 127.0.0.1:19093;" in text
    assert "client_max_body_size 48m;" in text and "proxy_read_timeout 75s;" in text
    assert f"ssl_certificate {files.server_cert};" in text
    assert "proxy_ssl_verify on;" in text and "proxy_ssl_name localhost;" in text
    assert f"proxy_ssl_trusted_certificate {files.ca_cert};" in text
    assert "proxy_pass https://superlink;" in text
    # ...an idle connection to the SuperLink is dropped by the front before uvicorn drops it
    assert f"keepalive_timeout {UPSTREAM_IDLE_S}s;" in text
    assert 0 < UPSTREAM_IDLE_S < SUPERLINK_IDLE_CLOSE_S
    # ...a 5 MiB reply fits the proxy's memory buffers (81 x 64k), never a temporary file
    assert "proxy_buffers 81 64k;" in text and "proxy_max_temp_file_size 0;" in text
    # ...only POST /v1/fleet/<call>, the rest 403; its files in the state folder
    assert "location /v1/fleet/ {" in text and "limit_except POST" in text
    assert '$request_uri !~ "^/v1/fleet/[a-z][a-z-]*$"' in text
    assert "location / {\n            return 403;" in text
    assert "/v1/control" not in text.split("http {")[1].replace("# ", "")
    for line in text.splitlines():
        if "_temp_path" in line or line.strip().startswith(("pid ", "access_log", "error_log")):
            assert str(front.root) in line, line
    assert front.config.read_text() == text
    assert "user root" not in text


def test_an_insecure_front_is_plain_text_on_both_sides(
    coordinator: tuple[DeploymentConfig, CoordinatorFiles],
) -> None:
    # Prepare
    cfg, files = coordinator
    # Execute
    text = front_config(cfg, files, insecure=True, run_as_root=True)
    write_front_config(text, FrontFiles.of(files), find_nginx(cfg))
    # Assert
    assert "listen 0.0.0.0:19443;" in text and "ssl" not in text
    assert "proxy_pass http://superlink;" in text
    assert "user root root;" in text  # workers may write the root-owned state folder


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"superlink_host": "0.0.0.0"}, "deployment.superlink_host=0.0.0.0 would expose"),
        ({"front_port": 19093}, "deployment.front_port and superlink_port are both 19093"),
        ({"front_port": 70000}, "deployment.front_port=70000 is not a TCP port"),
        ({"front_max_body_mb": 5}, "deployment.front_max_body_mb=5 is too small"),
        ({"front_timeout_s": 0.0}, "deployment.front_timeout_s=0.0 must be positive"),
    ],
)
def test_settings_that_would_not_protect_the_superlink_are_refused(
    coordinator: tuple[DeploymentConfig, CoordinatorFiles],
    change: dict[str, object],
    message: str,
) -> None:
    # Prepare
    cfg, _ = coordinator
    # Execute / Assert
    with pytest.raises(FrontError, match=message.replace(".", r"\.")):
        check_front_settings(dataclasses.replace(cfg, **change))  # type: ignore[arg-type]


def test_the_defaults_pass_and_the_certificate_names_localhost(
    coordinator: tuple[DeploymentConfig, CoordinatorFiles],
) -> None:
    # Execute / Assert: nothing raised
    check_front_settings(DeploymentConfig())
    check_upstream_certificate(coordinator[1])


@pytest.mark.parametrize("name", ["fractofl-test-absent-nginx", "/opt/nowhere/nginx"])
def test_missing_nginx_says_how_to_install_it(name: str) -> None:
    # Execute / Assert
    with pytest.raises(FrontError) as raised:
        find_nginx(DeploymentConfig(nginx=name))
    assert "sudo apt-get install nginx" in str(raised.value)
    assert f"deployment.nginx={name}" in str(raised.value)
    assert "--no-front" in str(raised.value)
