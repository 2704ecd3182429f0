"""The caller's identity, read from the verified client certificate.

The identity is, in this order: the e-mail address in the subject alternative
name, the subject's emailAddress attribute, or the subject's whole common name.
Values come from the decoded certificate (``SSLSocket.getpeercert()``), never from
a distinguished-name string, so a CN such as ``admin, CN=root`` is one identity
and can never be read as ``admin`` or ``root``. A certificate that gives two
candidates at the same step, or an empty one, is refused, since what it means
is unclear. Only ASCII letters are lowered: Unicode case rules would make
different names equal (the Kelvin sign "K" lowers to "k"), and spaces count.
"""

from __future__ import annotations

from typing import Any

from alps.acl import normalize_identity
from alps.errors import NotAuthorized


def identity_from_peercert(cert: dict[str, Any] | None) -> str:
    """Return the identity of a peer certificate; raise NotAuthorized.

    The first source that the certificate has decides: it must give exactly
    one non-empty value, taken as it is but for ASCII upper case.
    """
    if not cert:
        raise NotAuthorized()
    emails = [
        value for kind, value in cert.get("subjectAltName", ()) if kind == "email"
    ]
    for candidates in (
        emails,
        _subject_values(cert, "emailAddress"),
        _subject_values(cert, "commonName"),
    ):
        if not candidates:
            continue
        if len(candidates) > 1 or not candidates[0]:
            raise NotAuthorized()
        return normalize_identity(candidates[0])
    raise NotAuthorized()


def _subject_values(cert: dict[str, Any], attribute: str) -> list[str]:
    return [
        value
        for relative_name in cert.get("subject", ())
        for key, value in relative_name
        if key == attribute
    ]
