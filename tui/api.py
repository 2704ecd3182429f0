"""The API calls that the dashboard makes beyond those of ``alps.client``.

``DashboardClient`` adds the admin-wide job list, a live follow of a job's
output, and ``interrupt`` so that the UI thread can end a follow that blocks a
worker thread in a socket read.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
from collections.abc import Iterator
from typing import Any

from alps.client import STREAMS, ApiClient, TransportError, _job_path

CHUNK_SIZE = 65536


class DashboardClient(ApiClient):
    """An ``ApiClient`` with the dashboard's calls; one per thread, as its base."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._interrupted = False

    def list_jobs(self, everyone: bool = False) -> list[dict[str, Any]]:
        """Return the status of the caller's jobs, or with ``everyone`` of all jobs.

        ``everyone`` is for admins; the API rejects it for a user with 403.
        """
        path = "/list?all=true" if everyone else "/list"
        jobs = self._request("GET", path).get("jobs")
        if not isinstance(jobs, list):
            raise TransportError(
                f"the API at {self.address} sent a job list without a 'jobs' list"
            )
        return [job for job in jobs if isinstance(job, dict)]

    def follow(
        self, job_id: int, stream: str, offset: int = 0
    ) -> tuple[int, Iterator[bytes]]:
        """Open a live follow of ``stream`` from byte ``offset``.

        Return the stream's size at the time of the request and an iterator of
        the bytes from ``offset`` on, each chunk as soon as it arrives. The
        iterator ends once the job has stopped and every byte was sent.
        """
        if stream not in STREAMS:
            raise ValueError(f"invalid stream {stream!r}: use 'stdout' or 'stderr'")
        path = f"/output/{_job_path(job_id)}/{stream}?follow=true&offset={int(offset)}"
        response = self._send("GET", path, None, retry=True)
        if response.status != 200:
            self._raise_for(response, self._read_body(response))
        size_header = response.getheader("alps-stream-size", "")
        size = int(size_header) if size_header.isdigit() else 0
        return size, self._chunks(response)

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

    def _chunks(self, response: http.client.HTTPResponse) -> Iterator[bytes]:
        complete = False
        try:
            # _read_chunk returns each chunk of a chunked reply as it comes.
            while chunk := self._read_chunk(response, CHUNK_SIZE):
                yield chunk
            complete = True
        finally:
            if not complete:
                # An unread rest would be taken for the next reply's start.
                self.close()
