"""The API's TLS: version 1.3 only, and a client certificate from the configured CA."""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """Build the context: a client without a valid certificate fails the handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(ca))
    context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    return context
