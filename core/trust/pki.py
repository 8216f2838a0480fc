"""The consortium's certificate authority, the SuperLink's certificate, members' key pairs.

The coordinator runs a small CA (``ca.key``, ``ca.crt``): ``ca.crt`` is what every member's
SuperNode trusts (``--root-certificates``) and ``ca.key`` never leaves the coordinator. The CA
signs the SuperLink's TLS certificate, whose subject alternative names list every name and
address members reach it on, plus ``localhost`` and ``127.0.0.1`` (the SuperLink's own
ServerApp processes connect back there). Each member authenticates its SuperNode with an EC
P-384 key pair in OpenSSH format, the only kind Flower 1.42 accepts; only ``member.pub`` goes
to the coordinator. Keys are EC P-384, written unencrypted with mode 0600 (in 0700 folders);
existing files are replaced only with ``force``.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fractofl.core.files.atomic import atomic_write, mode_readable_by_others

CA_KEY_FILE = "ca.key"
CA_CERT_FILE = "ca.crt"
SERVER_KEY_FILE = "superlink.key"
SERVER_CERT_FILE = "superlink.crt"
MEMBER_KEY_FILE = "member.key"
MEMBER_PUBLIC_KEY_FILE = "member.pub"

# The SuperLink's own ServerApp processes connect back to it on 127.0.0.1.
ALWAYS_INCLUDED_HOSTS = ("localhost", "127.0.0.1")
OPENSSH_KEY_TYPE = "ecdsa-sha2-nistp384"
_HASH = hashes.SHA384()
_CLOCK_SKEW = timedelta(minutes=5)  # certificates are valid from a little before "now"
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class PkiError(RuntimeError):
    """A CA, certificate or key file is missing, exposed, of the wrong kind, or a setting
    for one is invalid; the message names the file or setting and what to do."""


@dataclass(frozen=True)
class CaFiles:
    """The consortium CA: ``key`` stays on the coordinator, ``certificate`` goes to members."""

    key: Path
    certificate: Path


@dataclass(frozen=True)
class ServerCertificate:
    """The SuperLink's TLS key and CA-signed certificate."""

    key: Path
    certificate: Path
    subject_alternative_names: tuple[str, ...]  # "DNS:name" or "IP:address"
    not_valid_after: datetime


@dataclass(frozen=True)
class MemberKeys:
    """A member's SuperNode authentication key pair (OpenSSH format)."""

    private_key: Path
    public_key: Path
    fingerprint: str  # "SHA256:..." as ``ssh-keygen -lf`` prints it


def create_ca(pki_dir: Path, name: str, days: int, force: bool = False) -> CaFiles:
    """Create the consortium CA: an EC P-384 key and a self-signed CA certificate.

    Parameters
    ----------
    pki_dir
        Folder for ``ca.key`` (0600) and ``ca.crt``; created 0700 (``deployment.pki_dir``).
    name
        The certificate's common name (``deployment.ca_name``).
    days
        Validity of the certificate (``deployment.ca_days``).
    force
        Replace an existing CA; certificates it issued no longer verify against the new one.
    """
    if not name.strip():
        raise PkiError("deployment.ca_name is empty; give the CA a name")
    _check_days(days, "deployment.ca_days")
    files = CaFiles(key=pki_dir / CA_KEY_FILE, certificate=pki_dir / CA_CERT_FILE)
    _refuse_existing([files.key, files.certificate], force, "the CA")
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(key_id, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(key_id), critical=False
        )
        .sign(key, _HASH)
    )
    _make_private_dir(pki_dir)
    _write_pair(files.key, _pkcs8_pem(key), files.certificate, _pem(certificate))
    return files


def issue_server_certificate(
    pki_dir: Path, hosts: Sequence[str], days: int, force: bool = False
) -> ServerCertificate:
    """Issue the SuperLink's TLS certificate, signed by the CA in ``pki_dir``.

    Parameters
    ----------
    pki_dir
        Folder holding the CA; ``superlink.key`` (0600) and ``superlink.crt`` go there too.
    hosts
        Names and IP addresses members reach the SuperLink on (``deployment.hosts``);
        ``localhost`` and ``127.0.0.1`` are always added.
    days
        Validity (``deployment.certificate_days``), cut to the CA certificate's expiry.
    force
        Replace an existing SuperLink key and certificate.
    """
    names = _subject_alternative_names(hosts)
    _check_days(days, "deployment.certificate_days")
    ca_key, ca_cert = _load_ca(pki_dir)
    key_path, cert_path = pki_dir / SERVER_KEY_FILE, pki_dir / SERVER_CERT_FILE
    _refuse_existing([key_path, cert_path], force, "the SuperLink certificate")
    key = ec.generate_private_key(ec.SECP384R1())
    now = datetime.now(UTC)
    not_valid_after = min(now + timedelta(days=days), ca_cert.not_valid_after_utc)
    common_name = next((str(n.value) for n in names if isinstance(n, x509.DNSName)), "superlink")
    ca_key_id = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_valid_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_agreement=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id),
            critical=False,
        )
        .sign(ca_key, _HASH)
    )
    _write_pair(key_path, _pkcs8_pem(key), cert_path, _pem(certificate))
    return ServerCertificate(
        key=key_path,
        certificate=cert_path,
        subject_alternative_names=tuple(_general_name_text(n) for n in names),
        not_valid_after=not_valid_after,
    )


def create_member_key_pair(member_dir: Path, force: bool = False) -> MemberKeys:
    """Create a member's EC P-384 key pair in OpenSSH format for SuperNode authentication.

    ``member.key`` (0600, unencrypted: the SuperNode reads it unattended) never leaves the
    member; ``member.pub`` (one line, ``ecdsa-sha2-nistp384 AAAA...``) goes to the
    coordinator, who registers it. ``member_dir`` is created 0700 (``deployment.member_dir``).
    """
    private_path = member_dir / MEMBER_KEY_FILE
    public_path = member_dir / MEMBER_PUBLIC_KEY_FILE
    _refuse_existing([private_path, public_path], force, "the member key pair")
    key = ec.generate_private_key(ec.SECP384R1())
    private_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public_line = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _make_private_dir(member_dir)
    _write_pair(private_path, private_bytes, public_path, public_line + b"\n")
    return MemberKeys(private_path, public_path, _openssh_fingerprint(public_line))


def public_key_fingerprint(path: Path) -> str:
    """The ``SHA256:...`` fingerprint of an EC P-384 OpenSSH public key file (``member.pub``)."""
    if not path.is_file():
        raise PkiError(f"public key {path} does not exist")
    try:
        key = serialization.load_ssh_public_key(path.read_bytes().strip())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PkiError(f"{path} is not an OpenSSH public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise PkiError(
            f"{path} is not an EC P-384 key ({OPENSSH_KEY_TYPE}), the only kind Flower accepts "
            "for SuperNodes; the member creates one with `fractofl member keys`"
        )
    # Re-encoded: the fingerprint covers the key alone, not a comment after it.
    return _openssh_fingerprint(
        key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )


def certificate_summary(path: Path) -> dict[str, object]:
    """What to print about a PEM certificate: names, expiry, SANs and SHA-256 fingerprint."""
    certificate = _load_certificate(path)
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = [_general_name_text(n) for n in sans.value]
    except x509.ExtensionNotFound:
        names = []
    digest = certificate.fingerprint(hashes.SHA256()).hex().upper()
    return {
        "subject": _common_name(certificate.subject),
        "issuer": _common_name(certificate.issuer),
        "not_valid_after": certificate.not_valid_after_utc.isoformat(),
        "subject_alternative_names": names,
        "sha256": ":".join(digest[i : i + 2] for i in range(0, len(digest), 2)),
    }


def _check_days(days: int, setting: str) -> None:
    if days <= 0:
        raise PkiError(f"{setting}={days}: a validity must be a positive number of days")


def _refuse_existing(paths: Sequence[Path], force: bool, what: str) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        files = " and ".join(existing) + (
            " already exist" if len(existing) > 1 else " already exists"
        )
        raise PkiError(f"{files}; refusing to replace {what} (use --force to replace it)")


def _make_private_dir(folder: Path) -> None:
    """Create ``folder`` with mode 0700 (whatever the umask); an existing one is left as is."""
    if not folder.is_dir():
        folder.mkdir(parents=True, mode=0o700)
        folder.chmod(0o700)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Atomically replace ``path`` with ``data``; the file has ``mode`` from its creation."""

    def write(handle: BinaryIO) -> None:
        os.fchmod(handle.fileno(), mode)
        handle.write(data)

    atomic_write(path, write)


def _write_pair(private_path: Path, private: bytes, public_path: Path, public: bytes) -> None:
    """Write a private key (0600) and its public counterpart (0644); no key without its
    counterpart is left behind."""
    _write_file(private_path, private, 0o600)
    try:
        _write_file(public_path, public, 0o644)
    except BaseException:
        private_path.unlink(missing_ok=True)
        raise


def _key_usage(
    digital_signature: bool = False,
    key_agreement: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=key_agreement,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _subject_alternative_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """Validated SANs for ``hosts`` plus ``localhost`` and ``127.0.0.1``, without repeats."""
    if isinstance(hosts, str):
        raise PkiError(f"deployment.hosts must be a list of names, not the string {hosts!r}")
    if not [h for h in hosts if str(h).strip()]:
        raise PkiError(
            "deployment.hosts is empty; list the names and IP addresses members reach the "
            "coordinator on (e.g. deployment.hosts=[coordinator.example.org,10.0.0.5] or "
            "--host coordinator.example.org)"
        )
    names: list[x509.GeneralName] = []
    for host in [*hosts, *ALWAYS_INCLUDED_HOSTS]:
        name = _general_name(str(host))
        if name not in names:
            names.append(name)
    return names


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host.lower()
    labels = name.split(".")
    if (
        len(name) <= 253
        and all(_HOST_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()  # "10.0.0.256" is a broken address, not a name
    ):
        return x509.DNSName(name)
    raise PkiError(
        f"deployment.hosts (or --host): {host!r} is neither a host name nor an IP address; "
        "give bare names (coordinator.example.org) or addresses (10.0.0.5), no scheme, port "
        "or wildcard"
    )


def _general_name_text(name: x509.GeneralName) -> str:
    prefix = "IP" if isinstance(name, x509.IPAddress) else "DNS"
    return f"{prefix}:{name.value}"


def _load_ca(pki_dir: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key_path, cert_path = pki_dir / CA_KEY_FILE, pki_dir / CA_CERT_FILE
    for path in (key_path, cert_path):
        if not path.is_file():
            raise PkiError(
                f"no CA in {pki_dir} (deployment.pki_dir): {path} is missing; "
                "run `fractofl ca init` first"
            )
    _refuse_exposed(key_path)
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PkiError(f"CA key {key_path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"CA key {key_path} is a {type(key).__name__}, not an EC key")
    certificate = _load_certificate(cert_path)
    if certificate.public_key() != key.public_key():
        raise PkiError(
            f"CA certificate {cert_path} does not belong to CA key {key_path}; restore the "
            "matching pair or create a new CA with `fractofl ca init --force`"
        )
    if certificate.not_valid_after_utc <= datetime.now(UTC):
        raise PkiError(
            f"CA certificate {cert_path} expired on {certificate.not_valid_after_utc:%Y-%m-%d}; "
            "create a new CA with `fractofl ca init --force` and give members the new ca.crt"
        )
    return key, certificate


def _load_certificate(path: Path) -> x509.Certificate:
    if not path.is_file():
        raise PkiError(f"certificate {path} does not exist")
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise PkiError(f"{path} is not a PEM certificate: {exc}") from None


def _refuse_exposed(path: Path) -> None:
    mode = mode_readable_by_others(path)
    if mode is not None:
        raise PkiError(
            f"CA key {path} has permissions {mode:04o}, readable by others; "
            f"restrict it to its owner with: chmod 600 {path}"
        )


def _common_name(name: x509.Name) -> str:
    attributes = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attributes[0].value) if attributes else name.rfc4514_string()


def _pkcs8_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _openssh_fingerprint(public_line: bytes) -> str:
    """``SHA256:`` and the unpadded base64 of the SHA-256 of the key blob (second field)."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
