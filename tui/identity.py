"""The identity that the API will see, read from the client certificate.

The rule is the API's: the e-mail address in the subject alternative name, else
the subject's emailAddress attribute, else its common name, in lower case. A
certificate with two candidates at the same step has no identity, because the
API rejects it.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID


def certificate_identity(path: Path) -> str | None:
    """Return the identity in the PEM certificate at ``path``, or None if none."""
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    for candidates in (
        _san_emails(certificate),
        _subject_values(certificate, NameOID.EMAIL_ADDRESS),
        _subject_values(certificate, NameOID.COMMON_NAME),
    ):
        if len(candidates) > 1:
            return None
        if candidates and candidates[0].strip():
            return candidates[0].strip().lower()
    return None


def _san_emails(certificate: x509.Certificate) -> list[str]:
    try:
        extension = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except x509.ExtensionNotFound:
        return []
    return list(extension.value.get_values_for_type(x509.RFC822Name))


def _subject_values(
    certificate: x509.Certificate, oid: x509.ObjectIdentifier
) -> list[str]:
    return [
        str(attribute.value)
        for attribute in certificate.subject.get_attributes_for_oid(oid)
    ]
