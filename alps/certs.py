"""Certificates for ``alps dev`` and the tests: a CA, a server and client identities.

Keys are ECDSA P-256: quick to make, and accepted by every TLS 1.3 stack. Private
keys are written with mode 0600 from the start (``os.open`` with the mode, never a
``chmod`` after the fact).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 825


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def write(self, cert_path: Path, key_path: Path) -> None:
        write_cert(cert_path, self.cert)
        write_key(key_path, self.key)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_ca(common_name: str = "ALPS dev CA", days: int = CA_DAYS) -> Issued:
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue_server(ca: Issued, hosts: list[str], days: int = LEAF_DAYS) -> Issued:
    """Issue a server certificate for ``hosts`` (names or IP addresses)."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    return _issue(ca, subject, names, ExtendedKeyUsageOID.SERVER_AUTH, _validity(days))


def issue_client(
    ca: Issued,
    email: str | None = None,
    *,
    common_name: str | None = None,
    subject_email: str | None = None,
    extra_emails: tuple[str, ...] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Issued:
    """Issue a client certificate.

    ``email`` goes into the SAN, and by default into the subject's CN too.
    ``subject_email`` sets the subject's emailAddress attribute, and
    ``extra_emails`` adds more SAN e-mail addresses; tests use both to build
    certificates that ALPS must read, or refuse, in a particular way.
    """
    attributes = []
    cn = common_name if common_name is not None else email
    if cn is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    if subject_email is not None:
        attributes.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, subject_email))
    emails = ([email] if email else []) + list(extra_emails)
    names: list[x509.GeneralName] = [x509.RFC822Name(address) for address in emails]
    validity = _validity(LEAF_DAYS)
    if not_before is not None or not_after is not None:
        validity = (not_before or validity[0], not_after or validity[1])
    return _issue(
        ca, x509.Name(attributes), names, ExtendedKeyUsageOID.CLIENT_AUTH, validity
    )


def _issue(
    ca: Issued,
    subject: x509.Name,
    names: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    validity: tuple[dt.datetime, dt.datetime],
) -> Issued:
    key = new_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(names), critical=False
        )
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    now = _now()
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)


def write_cert(path: Path, cert: x509.Certificate) -> None:
    _write_new(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new(path, data, 0o600)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file created with ``mode``, then move it in place."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


def load(cert_path: Path, key_path: Path) -> Issued:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path} does not hold an ECDSA key")
    return Issued(cert, key)


def is_current(cert: x509.Certificate, margin_days: int = 1) -> bool:
    """Return True when ``cert`` is valid now and for ``margin_days`` more."""
    now = _now()
    return (
        cert.not_valid_before_utc <= now
        and now + dt.timedelta(days=margin_days) < cert.not_valid_after_utc
    )
