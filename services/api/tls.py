"""The API's TLS: version 1.3 only, and a client certificate from the configured CA."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path


def server_context(
    ca: Path,
    cert: Path,
    key: Path,
    on_handshake_failure: Callable[[str], None] | None = None,
) -> ssl.SSLContext:
    """Build the context: a client without a valid certificate fails the handshake.

    ``on_handshake_failure`` receives the reason of each failed handshake.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(ca))
    context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    if on_handshake_failure is not None:
        context.sslobject_class = _reporting_class(on_handshake_failure)
    return context


def _reporting_class(report: Callable[[str], None]) -> type[ssl.SSLObject]:
    # asyncio logs a failed handshake only in debug mode and the HTTP layer never
    # sees the connection, so the SSL object is the one place that learns of it.
    class ReportingSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except ssl.SSLError as error:
                report(describe(error))
                raise

    return ReportingSSLObject


def describe(error: ssl.SSLError) -> str:
    """Return why a handshake failed, in OpenSSL's words."""
    reason = error.reason or str(error)
    detail = getattr(error, "verify_message", None)
    return f"{reason}: {detail}" if detail else reason
