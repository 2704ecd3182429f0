"""An HTTPS client of the ALPS API, with mutual TLS, on the standard library alone.

The ``alps`` command and the dashboard share it. It imports only ``http.client``,
``ssl``, ``json`` and ``base64``, so that a command such as ``alps status`` starts
quickly. Every failure is a ``ClientError`` whose message is one sentence that
names the address or file involved::

    ClientError
    ├── ApiError          the API returned an error body; carries ``status``
    ├── CredentialError   the CA, certificate or key file cannot be read or used
    └── TransportError    no connection, TLS handshake failed, timeout, bad reply
        └── ReplyTimeout  no reply, or no next chunk, within the read timeout
"""

from __future__ import annotations

import base64
import errno
import http.client
import json
import re
import select
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

# A DNS name (RFC 1123 letters, digits, hyphens, dots) or an IPv4 or IPv6 address.
_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+$|^[0-9A-Fa-f:.]+$"
)
CONNECT_TIMEOUT = 10.0
# A stop waits until the job has ended, which takes up to the worker's stop
# grace period (10 seconds by default) plus a margin, so replies may be slow.
READ_TIMEOUT = 60.0
STREAMS = ("stdout", "stderr")


class ClientError(Exception):
    """A failed API call, with a message that is safe to show to a user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApiError(ClientError):
    """An error body ``{"status": N, "error": "..."}`` from the API."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class CredentialError(ClientError):
    """A CA, client certificate or key file that cannot be read or used."""


class TransportError(ClientError):
    """A connection, TLS or protocol failure between the client and the API."""


class ReplyTimeout(TransportError):
    """A reply, or the next chunk of a reply, that did not come in time."""


class StreamReply(NamedTuple):
    """An open reply of the raw output endpoint, whose body is read chunk by chunk.

    ``chunks`` must be read to its end, or closed, before the client sends its
    next request.
    """

    start: int  # offset in the stream of the reply's first byte
    size: int | None  # the stream's size in bytes when the reply was sent
    chunks: Iterator[bytes]


def parse_address(address: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (or ``[v6]:PORT``) and check that the port is 1-65535."""
    host, sep, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"invalid address {address!r}: expected HOST:PORT")
    if not _HOST.match(host):
        raise ValueError(
            f"invalid address {address!r}: the host must be a name or an IP address"
        )
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"invalid address {address!r}: port must be 1-65535")
    return host, port


def tls_context(ca: str | Path, cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """Build a TLS 1.3 client context that trusts ``ca`` and presents ``cert``."""
    context = _ca_context(ca)
    _load_client_pair(context, cert, key)
    return context


def check_ca_file(ca: str | Path) -> None:
    """Raise CredentialError unless ``ca`` is a readable PEM CA certificate."""
    _ca_context(ca)


def check_client_files(cert: str | Path, key: str | Path) -> None:
    """Raise CredentialError unless ``cert`` and ``key`` are a usable pair."""
    _load_client_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), cert, key)


def _ca_context(ca: str | Path) -> ssl.SSLContext:
    _check_readable("CA certificate", ca)
    try:
        context = ssl.create_default_context(cafile=str(ca))
    except ssl.SSLError as error:
        raise CredentialError(
            f"CA certificate {ca} is not a valid PEM certificate: {_reason(error)}"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def _load_client_pair(
    context: ssl.SSLContext, cert: str | Path, key: str | Path
) -> None:
    _check_readable("client certificate", cert)
    _check_readable("client key", key)
    try:
        context.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as error:
        raise CredentialError(
            f"client certificate {cert} and key {key} cannot be used together: "
            f"{_reason(error)}; check that both are PEM files and that the key "
            "belongs to the certificate"
        ) from None


def _check_readable(label: str, path: str | Path) -> None:
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as error:
        raise CredentialError(
            f"cannot read {label} {path}: {error.strerror or error}"
        ) from None


def _reason(error: ssl.SSLError) -> str:
    """Return the readable part of an OpenSSL error, such as ``unknown ca``."""
    reason = getattr(error, "reason", None)
    if reason:
        return str(reason).lower().replace("_", " ")
    return str(error)


class ApiClient:
    """Calls to one ALPS API over one keep-alive mutual-TLS connection.

    A client object is not safe to share between threads; give each thread its own.
    """

    def __init__(
        self,
        address: str,
        ca: str | Path,
        cert: str | Path,
        key: str | Path,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        try:
            self.host, self.port = parse_address(address)
        except ValueError as error:
            raise ClientError(str(error)) from None
        self.address = address
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._cert = cert
        self._context = tls_context(ca, cert, key)
        self._connection: http.client.HTTPSConnection | None = None

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # The endpoints, one method each --------------------------------------------

    def start(
        self, command: str, limits: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Start ``command`` with ``/bin/sh -c``; return its ID, owner, start time.

        ``limits`` may set ``memory`` (bytes, or a size such as ``"256M"``),
        ``cpu`` (a number of CPUs) and ``pids`` (processes and threads).
        """
        payload: dict[str, Any] = {"job": command}
        if limits:
            payload["limits"] = limits
        return self._request("POST", "/start", payload, retry=False)

    def stop(self, job_id: int) -> dict[str, Any]:
        """Stop a job and return its final status once it has stopped."""
        return self._request("POST", f"/stop/{_job_path(job_id)}")

    def status(self, job_id: int) -> dict[str, Any]:
        return self._request("GET", f"/status/{_job_path(job_id)}")

    def output(self, job_id: int, decode: bool = True) -> dict[str, Any]:
        """Return the job's status and output.

        With ``decode``, ``stdoutBytes`` and ``stderrBytes`` come back as
        ``bytes``; without it, as the API's base64 text.
        """
        body = self._request("GET", f"/output/{_job_path(job_id)}")
        if not decode:
            return body
        for stream in STREAMS:
            field = f"{stream}Bytes"
            try:
                body[field] = base64.b64decode(body.get(field, ""), validate=True)
            except (TypeError, ValueError):
                raise TransportError(
                    f"the API at {self.address} sent {field} that is not base64"
                ) from None
        return body

    def list(self, everyone: bool = False) -> dict[str, Any]:
        """Return ``{"jobs": [...]}``: the status of each of the caller's jobs.

        With ``everyone``, an admin gets every user's jobs.
        """
        return self._request("GET", "/list?all=true" if everyone else "/list")

    def take(self, job_id: int) -> dict[str, Any]:
        """Make the caller (an admin) the job's owner; return new and old owner."""
        return self._request("POST", f"/take/{_job_path(job_id)}")

    def read_stream(
        self,
        job_id: int,
        stream: str,
        offset: int = 0,
        limit: int | None = None,
        follow: bool = False,
        chunk_size: int = 65536,
    ) -> Iterator[bytes]:
        """Yield the raw bytes of a job's ``stdout`` or ``stderr``.

        The window starts at byte ``offset`` and contains at most ``limit``
        bytes, or runs to the stream's current end without a limit. With
        ``follow``, new bytes keep coming until the job has stopped.
        """
        reply = self.open_stream(
            job_id, stream, offset, limit, follow=follow, chunk_size=chunk_size
        )
        yield from reply.chunks

    def open_stream(
        self,
        job_id: int,
        stream: str,
        offset: int = 0,
        limit: int | None = None,
        *,
        follow: bool = False,
        last: int | None = None,
        chunk_size: int = 65536,
    ) -> StreamReply:
        """Request a job's ``stdout`` or ``stderr`` and return the open reply.

        ``offset``, ``limit`` and ``follow`` are as in ``read_stream``. With
        ``last``, the reply contains the stream's last ``last`` bytes instead,
        requested with a ``Range: bytes=-N`` suffix. For an empty stream that
        reply starts at 0 and contains nothing.
        """
        if stream not in STREAMS:
            raise ValueError(f"invalid stream {stream!r}: use 'stdout' or 'stderr'")
        path = f"/output/{_job_path(job_id)}/{stream}"
        headers: dict[str, str] = {}
        if last is not None:
            if last < 1:
                raise ValueError(f"invalid length {last!r}: expected 1 or more")
            headers["Range"] = f"bytes=-{int(last)}"
        else:
            path += f"?offset={int(offset)}"
            if limit is not None:
                path += f"&limit={int(limit)}"
            if follow:
                path += "&follow=true"
        response = self._send("GET", path, None, retry=True, headers=headers)
        if response.status == 416 and last is not None:
            # The API rejects any suffix range of an empty stream.
            self._read_body(response)
            return StreamReply(start=0, size=0, chunks=iter(()))
        if response.status not in (200, 206):
            self._raise_for(response, self._read_body(response))
        start, size = self._stream_window(response, offset)
        chunks = self._stream_chunks(response, chunk_size)
        return StreamReply(start=start, size=size, chunks=chunks)

    def _stream_window(
        self, response: http.client.HTTPResponse, offset: int
    ) -> tuple[int, int | None]:
        """Return the start and stream size that a raw output reply states."""
        size_header = response.getheader("alps-stream-size", "")
        size = int(size_header) if size_header.isdigit() else None
        if response.status != 206:
            return offset, size
        # Content-Range: bytes FIRST-LAST/SIZE
        content_range = response.getheader("content-range", "")
        window, _, total = content_range.removeprefix("bytes ").partition("/")
        first = window.partition("-")[0]
        if not first.isdigit():
            self.close()
            raise TransportError(
                f"the API at {self.address} sent a partial reply with an invalid "
                f"Content-Range header {content_range[:60]!r}"
            )
        return int(first), int(total) if total.isdigit() else size

    def _stream_chunks(
        self, response: http.client.HTTPResponse, chunk_size: int
    ) -> Iterator[bytes]:
        complete = False
        try:
            while chunk := self._read_chunk(response, chunk_size):
                yield chunk
            complete = True
        finally:
            if not complete:
                # An unread rest would be taken for the next reply's start.
                self.close()

    # The transport --------------------------------------------------------------

    def _request(
        self, method: str, path: str, payload: object = None, retry: bool = True
    ) -> dict[str, Any]:
        body = None if payload is None else json.dumps(payload).encode()
        response = self._send(method, path, body, retry)
        data = self._read_body(response)
        if response.status >= 400:
            self._raise_for(response, data)
        decoded = self._decode(data)
        if decoded is None:
            raise TransportError(
                f"the API at {self.address} sent a reply that is not a JSON object "
                f"(HTTP {response.status})"
            )
        return decoded

    def _send(
        self,
        method: str,
        path: str,
        body: bytes | None,
        retry: bool,
        *,
        headers: dict[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        """Send one request and return the response with its headers read.

        ``retry`` allows a second attempt on a new connection when a reused
        connection turns out to be closed. A start is sent with ``retry=False``,
        because a repeat could run its command twice.
        """
        if self._connection is not None and self._dropped():
            self.close()
        reused = self._connection is not None
        all_headers = {"Accept": "application/json", **(headers or {})}
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        try:
            connection = self._connect()
            connection.request(method, path, body=body, headers=all_headers)
            return connection.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.close()
            if not (reused and retry):
                raise self._closed_error(reused) from None
        except (OSError, http.client.HTTPException) as error:
            self.close()
            raise self._transport_error(error) from None
        return self._send(method, path, body, retry=False, headers=headers)

    def _connect(self) -> http.client.HTTPSConnection:
        if self._connection is None:
            connection = http.client.HTTPSConnection(
                self.host,
                self.port,
                timeout=self.connect_timeout,
                context=self._context,
            )
            try:
                connection.connect()
            except TimeoutError:
                connection.close()
                raise TransportError(
                    f"cannot connect to {self.host}:{self.port}: timed out after "
                    f"{self.connect_timeout:g} seconds; check the address and "
                    "that the API is running"
                ) from None
            assert connection.sock is not None
            connection.sock.settimeout(self.read_timeout)
            self._connection = connection
        return self._connection

    def _dropped(self) -> bool:
        """Tell whether the server closed the idle connection.

        An idle keep-alive socket that is readable has either reached its end or
        contains bytes that no request asked for; it cannot be used either way.
        """
        assert self._connection is not None
        sock = self._connection.sock
        if sock is None:
            return True
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)

    def _read_body(self, response: http.client.HTTPResponse) -> bytes:
        try:
            return response.read()
        except (OSError, http.client.HTTPException) as error:
            self.close()
            raise self._transport_error(error) from None

    def _read_chunk(self, response: http.client.HTTPResponse, size: int) -> bytes:
        try:
            # A chunked reply may be a live follow, so take each chunk as it
            # comes. For a sized reply, read() marks the response closed at its
            # end, which read1() does not (Python 3.11) and which http.client
            # needs before the next request on the connection.
            if response.chunked:
                return response.read1(size)
            return response.read(size)
        except (OSError, http.client.HTTPException) as error:
            self.close()
            raise self._transport_error(error) from None

    def _decode(self, data: bytes) -> dict[str, Any] | None:
        try:
            decoded = json.loads(data)
        except ValueError:
            return None
        return decoded if isinstance(decoded, dict) else None

    def _raise_for(self, response: http.client.HTTPResponse, data: bytes) -> None:
        decoded = self._decode(data)
        message = None if decoded is None else decoded.get("error")
        if not isinstance(message, str) or not message:
            message = (
                f"the API at {self.address} answered HTTP {response.status} "
                f"{response.reason} with no error message"
            )
        raise ApiError(response.status, message)

    # Errors ----------------------------------------------------------------------

    def _closed_error(self, reused: bool) -> TransportError:
        if reused:
            return TransportError(
                f"the API at {self.address} closed the connection before it "
                "replied; it may be restarting, so try again in a moment"
            )
        # With TLS 1.3 the server checks the client certificate after the client
        # has finished its side of the handshake, so a rejected certificate
        # shows up as a new connection closed before the first reply.
        return TransportError(
            f"the TLS handshake with {self.host}:{self.port} failed: the server "
            f"closed the connection, most likely because it rejected the client "
            f"certificate {self._cert}; check that it is signed by the CA that "
            "the server trusts"
        )

    def _transport_error(self, error: Exception) -> ClientError:
        where = f"{self.host}:{self.port}"
        if isinstance(error, ssl.SSLCertVerificationError):
            return TransportError(
                f"the server certificate of {where} is not trusted: "
                f"{error.verify_message}; check that the configured CA signed it "
                f"and that it names {self.host}"
            )
        if isinstance(error, ssl.SSLError):
            return TransportError(
                f"the TLS handshake with {where} failed: {_reason(error)}; check "
                "that the client certificate is signed by a CA the server trusts"
            )
        if isinstance(error, ConnectionRefusedError):
            return TransportError(
                f"cannot connect to {where}: connection refused; "
                "is the ALPS API running?"
            )
        if isinstance(error, TimeoutError):
            # Connecting has its own timeout and message, so this one is a reply
            # that did not come in time.
            return ReplyTimeout(
                f"the API at {self.address} did not reply within "
                f"{self.read_timeout:g} seconds; try again, or check the API's log"
            )
        if isinstance(error, socket.gaierror):
            return TransportError(f"cannot resolve host {self.host}: {error.strerror}")
        if isinstance(error, OSError) and error.errno in _UNREACHABLE:
            return TransportError(
                f"cannot connect to {where}: {error.strerror}; check the address "
                "and your network"
            )
        if isinstance(error, http.client.HTTPException):
            return TransportError(
                f"the API at {self.address} sent an invalid HTTP reply: "
                f"{type(error).__name__}"
            )
        assert isinstance(error, OSError)
        return TransportError(f"cannot connect to {where}: {error.strerror or error}")


_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}


def _job_path(job_id: int) -> str:
    """Check a job ID before it goes into a URL path."""
    if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id < 1:
        raise ValueError(f"invalid job ID {job_id!r}: expected a positive integer")
    return str(job_id)
