"""``fractofl ca init | issue`` and ``fractofl member keys`` as a user types them."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from cryptography import x509

from fractofl.core.trust.pki import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    MEMBER_KEY_FILE,
    MEMBER_PUBLIC_KEY_FILE,
    SERVER_CERT_FILE,
    SERVER_KEY_FILE,
    public_key_fingerprint,
)
from tests.conftest import run_fractofl


def test_ca_init_then_issue_writes_the_coordinator_files(tmp_path: Path) -> None:
    # Execute
    init = run_fractofl("ca", "init", "deployment.ca_name=Test CA", cwd=tmp_path)
    again = run_fractofl("ca", "init", cwd=tmp_path)
    issue = run_fractofl(
        "ca", "issue", "--host", "coordinator.example.org", "--host", "10.0.0.5", cwd=tmp_path
    )
    # Assert
    pki = tmp_path.resolve() / "pki"
    assert init.returncode == 0, init.stderr
    assert f"CA certificate: {pki / CA_CERT_FILE}" in init.stdout
    assert "every member needs this file" in init.stdout
    assert f"CA private key: {pki / CA_KEY_FILE} (mode 0600)" in init.stdout
    assert "must never leave the coordinator" in init.stdout
    assert stat.S_IMODE((pki / CA_KEY_FILE).stat().st_mode) == 0o600
    assert again.returncode == 1
    errors = [line for line in again.stderr.splitlines() if line.startswith("fractofl: error")]
    assert len(errors) == 1 and "--force" in errors[0]
    # ... the second command took the first one's settings from the saved profile
    assert "deployment settings from coordinator/deployment.yaml: ca_name=Test CA" in again.stderr
    assert "Traceback" not in again.stderr
    assert issue.returncode == 0, issue.stderr
    assert (
        "names and addresses: DNS:coordinator.example.org, IP:10.0.0.5, DNS:localhost, IP:127.0.0.1"
    ) in issue.stdout
    assert "signed by Test CA, valid until " in issue.stdout
    assert (pki / SERVER_KEY_FILE).is_file()
    certificate = x509.load_pem_x509_certificate((pki / SERVER_CERT_FILE).read_bytes())
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.0.0.5") in sans.get_values_for_type(x509.IPAddress)


def test_ca_issue_without_a_ca_says_to_run_ca_init(tmp_path: Path) -> None:
    # Execute
    result = run_fractofl("ca", "issue", cwd=tmp_path)
    # Assert
    assert result.returncode == 1
    assert "run `fractofl ca init` first" in result.stderr and "Traceback" not in result.stderr


def test_member_keys_prints_the_fingerprint_of_the_public_key(tmp_path: Path) -> None:
    # Execute
    result = run_fractofl("member", "keys", "--dir", "site-a", cwd=tmp_path)
    # Assert
    member_dir = tmp_path.resolve() / "site-a"
    assert result.returncode == 0, result.stderr
    fingerprint = public_key_fingerprint(member_dir / MEMBER_PUBLIC_KEY_FILE)
    assert f"fingerprint: {fingerprint}\n" in result.stdout
    assert f"public key:  {member_dir / MEMBER_PUBLIC_KEY_FILE}" in result.stdout
    assert f"send only {MEMBER_PUBLIC_KEY_FILE} to the coordinator" in result.stdout
    assert "PRIVATE KEY" not in result.stdout + result.stderr
    assert stat.S_IMODE((member_dir / MEMBER_KEY_FILE).stat().st_mode) == 0o600
