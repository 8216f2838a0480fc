"""The consortium CA, the SuperLink certificate (checked with a real TLS handshake) and the
members' OpenSSH key pairs."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import shutil
import socket
import ssl
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from fractofl.core.trust.pki import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    MEMBER_KEY_FILE,
    MEMBER_PUBLIC_KEY_FILE,
    SERVER_CERT_FILE,
    SERVER_KEY_FILE,
    PkiError,
    ServerCertificate,
    certificate_summary,
    create_ca,
    create_member_key_pair,
    issue_server_certificate,
    public_key_fingerprint,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _verify_signed_by(certificate: x509.Certificate, issuer: x509.Certificate) -> None:
    public_key = issuer.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert certificate.signature_hash_algorithm is not None
    public_key.verify(
        certificate.signature,
        certificate.tbs_certificate_bytes,
        ec.ECDSA(certificate.signature_hash_algorithm),
    )


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A CA and a SuperLink certificate for a public name and address."""
    pki_dir = tmp_path / "pki"
    create_ca(pki_dir, "Test consortium CA", days=30)
    issue_server_certificate(pki_dir, ["coordinator.example.org", "10.0.0.5"], days=10)
    return pki_dir


@pytest.mark.usefixtures("permissive_umask")
def test_ca_is_a_self_signed_ca_with_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    # Prepare
    pki_dir = tmp_path / "pki"
    # Execute
    files = create_ca(pki_dir, "Test consortium CA", days=30)
    # Assert
    certificate = _certificate(files.certificate)
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    assert files.key == pki_dir / CA_KEY_FILE and files.certificate == pki_dir / CA_CERT_FILE
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert certificate.subject == certificate.issuer
    _verify_signed_by(certificate, certificate)
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1)
    assert files.key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert _mode(files.key) == 0o600 and _mode(pki_dir) == 0o700
    assert certificate_summary(files.certificate)["subject"] == "Test consortium CA"


def test_server_certificate_is_signed_by_the_ca_for_every_host(pki: Path) -> None:
    # Execute
    certificate = _certificate(pki / SERVER_CERT_FILE)
    ca = _certificate(pki / CA_CERT_FILE)
    # Assert
    _verify_signed_by(certificate, ca)
    assert certificate.issuer == ca.subject
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["coordinator.example.org", "localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("127.0.0.1"),
    ]
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert certificate.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    authority = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    ca_key_id = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert authority.value.key_identifier == ca_key_id.digest
    assert _mode(pki / SERVER_KEY_FILE) == 0o600
    assert certificate.not_valid_after_utc <= ca.not_valid_after_utc


def test_issue_returns_the_names_without_repeats(tmp_path: Path) -> None:
    # Prepare
    create_ca(tmp_path, "CA", days=30)
    # Execute
    issued = issue_server_certificate(tmp_path, ["localhost", "::1", "Node-1.Example.ORG"], 5)
    # Assert
    assert issued == ServerCertificate(
        key=tmp_path / SERVER_KEY_FILE,
        certificate=tmp_path / SERVER_CERT_FILE,
        subject_alternative_names=(
            "DNS:localhost",
            "IP:::1",
            "DNS:node-1.example.org",
            "IP:127.0.0.1",
        ),
        not_valid_after=issued.not_valid_after,
    )
    summary = certificate_summary(issued.certificate)
    assert summary["subject_alternative_names"] == list(issued.subject_alternative_names)
    assert summary["issuer"] == "CA"


@pytest.mark.parametrize(
    "hosts", [[], [""], ["coordinator:9092"], ["https://x.org"], ["*.x.org"], ["10.0.0.256"]]
)
def test_bad_hosts_are_refused_naming_the_setting(tmp_path: Path, hosts: list[str]) -> None:
    create_ca(tmp_path, "CA", days=30)
    with pytest.raises(PkiError, match=r"deployment\.hosts"):
        issue_server_certificate(tmp_path, hosts, days=5)
    assert not (tmp_path / SERVER_KEY_FILE).exists()


def test_existing_files_are_refused_without_force(pki: Path) -> None:
    # Prepare
    before = {p.name: p.read_bytes() for p in pki.iterdir()}
    # Execute / Assert
    with pytest.raises(PkiError, match=r"ca\.key.*already exist.*use --force"):
        create_ca(pki, "Other CA", days=30)
    with pytest.raises(PkiError, match=r"superlink\.key.*already exist.*use --force"):
        issue_server_certificate(pki, ["localhost"], days=5)
    assert {p.name: p.read_bytes() for p in pki.iterdir()} == before
    # ... and replaced with it
    create_ca(pki, "Other CA", days=30, force=True)
    issue_server_certificate(pki, ["localhost"], days=5, force=True)
    assert (pki / CA_CERT_FILE).read_bytes() != before[CA_CERT_FILE]
    _verify_signed_by(_certificate(pki / SERVER_CERT_FILE), _certificate(pki / CA_CERT_FILE))


def test_a_missing_or_exposed_ca_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match=r"ca\.key is missing; run `fractofl ca init` first"):
        issue_server_certificate(tmp_path / "nothing", ["localhost"], days=5)
    create_ca(tmp_path, "CA", days=30)
    (tmp_path / CA_KEY_FILE).chmod(0o644)
    with pytest.raises(PkiError, match=r"permissions 0644.*chmod 600"):
        issue_server_certificate(tmp_path, ["localhost"], days=5)


def test_invalid_validity_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match=r"deployment\.ca_days=0"):
        create_ca(tmp_path, "CA", days=0)
    create_ca(tmp_path, "CA", days=30)
    with pytest.raises(PkiError, match=r"deployment\.certificate_days=-1"):
        issue_server_certificate(tmp_path, ["localhost"], days=-1)


@pytest.fixture
def tls_server(pki: Path) -> Iterator[int]:
    """A TLS server on 127.0.0.1 with the SuperLink certificate; yields its port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / SERVER_CERT_FILE, pki / SERVER_KEY_FILE)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(5)
            try:
                with context.wrap_socket(connection, server_side=True) as tls:
                    tls.sendall(b"hello")
            except (ssl.SSLError, OSError):
                pass  # a client that rejected the certificate

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def _client_context(ca_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.load_verify_locations(ca_file)
    return context


def _handshake(port: int, context: ssl.SSLContext, server_hostname: str) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        return tls.recv(5)


@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1"])
def test_tls_client_trusting_only_the_ca_accepts_the_superlink(
    pki: Path, tls_server: int, server_hostname: str
) -> None:
    # Prepare
    context = _client_context(pki / CA_CERT_FILE)
    # Execute
    received = _handshake(tls_server, context, server_hostname)
    # Assert
    assert received == b"hello"


def test_tls_client_trusting_another_ca_rejects_the_superlink(
    tmp_path: Path, tls_server: int
) -> None:
    # Prepare
    other = create_ca(tmp_path / "other", "Another CA", days=30)
    context = _client_context(other.certificate)
    # Execute / Assert
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(tls_server, context, "localhost")


def test_tls_client_rejects_a_name_the_certificate_does_not_carry(
    pki: Path, tls_server: int
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(tls_server, _client_context(pki / CA_CERT_FILE), "elsewhere.example.org")


@pytest.mark.usefixtures("permissive_umask")
def test_member_key_pair_is_ec_p384_in_openssh_format(tmp_path: Path) -> None:
    # Prepare
    member_dir = tmp_path / "member"
    # Execute
    keys = create_member_key_pair(member_dir)
    # Assert
    assert keys.private_key == member_dir / MEMBER_KEY_FILE
    assert keys.public_key == member_dir / MEMBER_PUBLIC_KEY_FILE
    assert _mode(keys.private_key) == 0o600 and _mode(member_dir) == 0o700
    assert keys.private_key.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    private = serialization.load_ssh_private_key(keys.private_key.read_bytes(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(private.curve, ec.SECP384R1)
    lines = keys.public_key.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ecdsa-sha2-nistp384 AAAA")
    public = serialization.load_ssh_public_key(keys.public_key.read_bytes())
    assert public == private.public_key()


def test_member_fingerprint_is_the_openssh_one(tmp_path: Path) -> None:
    # Prepare
    keys = create_member_key_pair(tmp_path)
    blob = base64.b64decode(keys.public_key.read_text().split()[1])
    expected = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    # Execute
    from_file = public_key_fingerprint(keys.public_key)
    # Assert
    assert keys.fingerprint == from_file == expected
    ssh_keygen = shutil.which("ssh-keygen")
    if ssh_keygen is not None:
        printed = subprocess.run(
            [ssh_keygen, "-lf", str(keys.public_key)], capture_output=True, text=True, check=True
        ).stdout
        assert printed.split()[:2] == ["384", expected]


def test_member_keys_are_refused_without_force(tmp_path: Path) -> None:
    # Prepare
    first = create_member_key_pair(tmp_path)
    # Execute / Assert
    with pytest.raises(PkiError, match=r"member\.key.*already exist.*use --force"):
        create_member_key_pair(tmp_path)
    assert public_key_fingerprint(first.public_key) == first.fingerprint
    assert create_member_key_pair(tmp_path, force=True).fingerprint != first.fingerprint


def test_fingerprint_refuses_other_key_kinds_naming_the_file(tmp_path: Path) -> None:
    # Prepare: a P-256 OpenSSH key (Flower wants P-384) and a file that is no key at all
    p256 = tmp_path / "p256.pub"
    p256.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("not a key\n")
    # Execute / Assert
    with pytest.raises(PkiError, match=f"{p256} is not an EC P-384 key"):
        public_key_fingerprint(p256)
    with pytest.raises(PkiError, match=f"{garbage} is not an OpenSSH public key"):
        public_key_fingerprint(garbage)
    with pytest.raises(PkiError, match="does not exist"):
        public_key_fingerprint(tmp_path / "missing.pub")
