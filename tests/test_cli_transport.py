"""Connection and TLS failures: each is one ``alps: error:`` line, never a traceback."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tomli_w
from cli_support import alps_env, run_alps

from alps import certs
from alps.client import ApiClient, TransportError

from helpers import AlpsServer, Pki, free_port


def write_cli_config(path: Path, address: str, ca: Path, cert: Path, key: Path):
    config = {
        "server": {"address": address, "ca": str(ca)},
        "client": {"cert": str(cert), "key": str(key)},
    }
    path.write_text(tomli_w.dumps(config))
    return path


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket on 127.0.0.1 that accepts connections and never sends a byte."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server


def serve_tls_once(
    server: socket.socket, context: ssl.SSLContext
) -> Callable[[], None]:
    """Accept one connection on ``server`` in a thread and try a TLS handshake."""

    def handshake() -> None:
        connection, _ = server.accept()
        try:
            with context.wrap_socket(connection, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=handshake, daemon=True)
    thread.start()
    return lambda: thread.join(timeout=10)


# Through the CLI -----------------------------------------------------------------


def test_unreachable_server_says_connection_refused(tmp_path: Path, pki: Pki):
    port = free_port()
    config = write_cli_config(
        tmp_path / "alps.toml",
        f"127.0.0.1:{port}",
        pki.ca_cert,
        pki.cert("user"),
        pki.key("user"),
    )

    result = run_alps("list", env=alps_env(tmp_path, config))

    assert result.code == 1
    assert result.err == (
        f"alps: error: cannot connect to 127.0.0.1:{port}: connection refused; "
        "is the ALPS API running?\n"
    )


def test_client_certificate_of_other_ca_is_rejected(
    tmp_path: Path, alps_server: AlpsServer
):
    rogue = certs.make_ca("Rogue CA")
    certs.issue_client(rogue, "user@example.com").write(
        tmp_path / "rogue.crt", tmp_path / "rogue.key"
    )
    config = write_cli_config(
        tmp_path / "alps.toml",
        alps_server.address,
        alps_server.pki.ca_cert,
        tmp_path / "rogue.crt",
        tmp_path / "rogue.key",
    )

    result = run_alps("list", env=alps_env(tmp_path, config))

    assert result.code == 1
    assert result.err.count("\n") == 1
    assert result.err.startswith(
        f"alps: error: the TLS handshake with {alps_server.address} failed"
    )
    assert f"rejected the client certificate {tmp_path / 'rogue.crt'}" in result.err


def test_server_certificate_of_other_ca_is_not_trusted(
    tmp_path: Path, alps_server: AlpsServer
):
    other = certs.make_ca("Other CA")
    certs.write_cert(tmp_path / "other-ca.crt", other.cert)
    config = write_cli_config(
        tmp_path / "alps.toml",
        alps_server.address,
        tmp_path / "other-ca.crt",
        alps_server.pki.cert("user"),
        alps_server.pki.key("user"),
    )

    result = run_alps("list", env=alps_env(tmp_path, config))

    assert result.code == 1
    assert result.err.startswith(
        f"alps: error: the server certificate of {alps_server.address} is not trusted: "
    )
    assert "check that the configured CA signed it" in result.err


def test_missing_client_certificate_names_path(tmp_path: Path, alps_server):
    missing = tmp_path / "moved.crt"
    config = write_cli_config(
        tmp_path / "alps.toml",
        alps_server.address,
        alps_server.pki.ca_cert,
        missing,
        alps_server.pki.key("user"),
    )

    result = run_alps("status", "1", env=alps_env(tmp_path, config))

    assert result.code == 1
    assert result.err == (
        f"alps: error: cannot read client certificate {missing}: "
        "No such file or directory\n"
    )


def test_missing_ca_names_path(tmp_path: Path, alps_server: AlpsServer):
    missing = tmp_path / "moved-ca.crt"
    config = write_cli_config(
        tmp_path / "alps.toml",
        alps_server.address,
        missing,
        alps_server.pki.cert("user"),
        alps_server.pki.key("user"),
    )

    result = run_alps("list", env=alps_env(tmp_path, config))

    assert result.code == 1
    assert result.err == (
        f"alps: error: cannot read CA certificate {missing}: "
        "No such file or directory\n"
    )


# The client module ---------------------------------------------------------------


def test_client_times_out_on_silent_server(listener: socket.socket, pki: Pki):
    port = listener.getsockname()[1]
    client = ApiClient(
        f"127.0.0.1:{port}",
        pki.ca_cert,
        pki.cert("user"),
        pki.key("user"),
        connect_timeout=0.3,
    )

    with pytest.raises(TransportError) as caught:
        client.list()

    assert caught.value.message == (
        f"cannot connect to 127.0.0.1:{port}: timed out after 0.3 seconds; "
        "check the address and that the API is running"
    )


def test_client_times_out_waiting_for_reply(listener: socket.socket, pki: Pki):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert("server"), pki.key("server"))
    release = threading.Event()

    def accept_and_stay_silent() -> None:
        connection, _ = listener.accept()
        with context.wrap_socket(connection, server_side=True):
            release.wait(timeout=20)

    thread = threading.Thread(target=accept_and_stay_silent, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    client = ApiClient(
        f"127.0.0.1:{port}",
        pki.ca_cert,
        pki.cert("user"),
        pki.key("user"),
        read_timeout=0.3,
    )
    try:
        with pytest.raises(TransportError) as caught:
            client.list()
    finally:
        release.set()
        thread.join(timeout=10)

    assert caught.value.message == (
        f"the API at 127.0.0.1:{port} did not reply within 0.3 seconds; "
        "try again, or check the API's log"
    )


def test_client_rejects_server_certificate_for_other_host(
    listener: socket.socket, pki: Pki, tmp_path: Path
):
    certs.issue_server(pki.ca, ["alps.example.org"]).write(
        tmp_path / "other.crt", tmp_path / "other.key"
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "other.crt", tmp_path / "other.key")
    finish = serve_tls_once(listener, context)
    port = listener.getsockname()[1]
    client = ApiClient(
        f"127.0.0.1:{port}", pki.ca_cert, pki.cert("user"), pki.key("user")
    )

    with pytest.raises(TransportError) as caught:
        client.list()
    finish()

    assert "is not trusted: IP address mismatch" in caught.value.message


def test_client_reconnects_after_api_restart(make_server):
    server: AlpsServer = make_server()
    client = ApiClient(
        server.address,
        server.pki.ca_cert,
        server.pki.cert("user"),
        server.pki.key("user"),
    )
    first = client.start("true")["jobID"]

    server.stop_service("api")
    server.start_api()
    second = client.start("true")["jobID"]

    assert client.status(first)["jobID"] == first
    assert second == first + 1


def test_client_reuses_one_connection(alps_server: AlpsServer):
    with ApiClient(
        alps_server.address,
        alps_server.pki.ca_cert,
        alps_server.pki.cert("user"),
        alps_server.pki.key("user"),
    ) as client:
        client.list()
        first = client._connection
        client.list()

        assert client._connection is first


def test_client_follows_stream_until_job_stops(alps_server: AlpsServer):
    with ApiClient(
        alps_server.address,
        alps_server.pki.ca_cert,
        alps_server.pki.cert("user"),
        alps_server.pki.key("user"),
    ) as client:
        job_id = client.start("echo first; sleep 0.5; echo second")["jobID"]

        followed = b"".join(client.read_stream(job_id, "stdout", follow=True))
        status = client.status(job_id)

    assert followed == b"first\nsecond\n"
    assert status["jobStatus"] == "stopped"


def test_client_reads_stream_window(alps_server: AlpsServer):
    with ApiClient(
        alps_server.address,
        alps_server.pki.ca_cert,
        alps_server.pki.cert("user"),
        alps_server.pki.key("user"),
    ) as client:
        job_id = client.start("printf 0123456789")["jobID"]
        whole = b"".join(client.read_stream(job_id, "stdout", follow=True))
        window = b"".join(client.read_stream(job_id, "stdout", 3, 4))

    assert whole == b"0123456789"
    assert window == b"3456"


def test_client_works_after_stream_left_unfinished(alps_server: AlpsServer):
    with ApiClient(
        alps_server.address,
        alps_server.pki.ca_cert,
        alps_server.pki.cert("user"),
        alps_server.pki.key("user"),
    ) as client:
        job_id = client.start("echo begun; sleep 100")["jobID"]
        stream = client.read_stream(job_id, "stdout", follow=True)
        first = next(stream)
        stream.close()

        status = client.status(job_id)
        client.stop(job_id)

    assert first == b"begun\n"
    assert status["jobStatus"] == "running"
