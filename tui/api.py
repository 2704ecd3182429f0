"""The API calls that the dashboard makes beyond those of ``alps.client``.

``DashboardClient`` adds a checked job list, and ``interrupt`` so that the UI
thread can end a call, such as a live follow of a job's output, that blocks a
worker thread in a socket read.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
from typing import Any

from alps.client import ApiClient, TransportError

CHUNK_SIZE = 65536


class DashboardClient(ApiClient):
    """An ``ApiClient`` with the dashboard's calls; one per thread, as its base."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._interrupted = False

    def list_jobs(self, everyone: bool = False) -> list[dict[str, Any]]:
        """Return the status of the caller's jobs, or with ``everyone`` of all jobs.

        ``everyone`` is for admins; the API rejects it for a user with 403. A
        reply without a list of jobs raises TransportError.
        """
        jobs = self.list(everyone).get("jobs")
        if not isinstance(jobs, list):
            raise TransportError(
                f"the API at {self.address} sent a job list without a 'jobs' list"
            )
        return [job for job in jobs if isinstance(job, dict)]

    def interrupt(self) -> None:
        """Make the call in progress and every later call raise TransportError.

        Safe to call from another thread than the one using the client: it
        shuts down the connection's socket, so that a blocked read returns now.
        """
        self._interrupted = True
        connection = self._connection
        sock = None if connection is None else connection.sock
        if sock is None:
            return
        # The plain socket's shutdown leaves the TLS object alone, because the
        # reading thread still uses it. SSLSocket.shutdown would clear it.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def _connect(self) -> http.client.HTTPSConnection:
        connection = super()._connect()
        # The flag is read after the connection is stored. So an interrupt
        # from another thread either finds the socket to shut down, or has
        # set the flag before this read.
        if self._interrupted:
            self.close()
            raise TransportError(f"the call to {self.address} was interrupted")
        return connection
