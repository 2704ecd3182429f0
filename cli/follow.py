"""Copying a job's stdout and stderr as they grow: ``alps output -f`` and ``--tail``.

Each stream has a thread and an HTTPS connection of its own, so a line on one
shows while the other is silent. Each chunk goes to file descriptor 1 or 2 with
``os.write`` as it arrives, so no buffer holds it back. The threads are daemon
threads: Ctrl-C raises KeyboardInterrupt in the main thread, which returns at
once and leaves them to end with the process.

A follow whose connection drops while the job runs, as when the API restarts,
starts again from the last byte written, after a pause from
``RECONNECT_PAUSES``. Any byte received resets the count of attempts. A failure
of the first request, before following starts, is reported at once.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator

from alps.cli.tail import tail_offset
from alps.client import (
    STREAMS,
    ApiClient,
    ApiError,
    ClientError,
    ReplyTimeout,
    TransportError,
)

# Seconds to wait before each attempt to reconnect. They add up to 10.5 seconds,
# several times what the API takes to restart in the tests (about a second).
RECONNECT_PAUSES = (0.5, 1.0, 2.0, 3.0, 4.0)
# The API returns 503 while it cannot reach the worker, as during its restart.
RETRY_STATUSES = {503}

ClientFactory = Callable[[], ApiClient]


def copy_output(
    open_client: ClientFactory,
    job_id: int,
    follow: bool,
    tail: int | None = None,
    targets: dict[str, int] | None = None,
) -> None:
    """Copy the job's streams to their targets, by default stdout and stderr.

    Returns once both streams are copied. With ``follow`` that is once the job
    has stopped. Raises the first error of either stream without waiting for
    the other one.
    """
    targets = targets or {"stdout": 1, "stderr": 2}
    results: queue.Queue[BaseException | None] = queue.Queue()
    for stream in STREAMS:
        copier = StreamCopier(
            open_client, job_id, stream, targets[stream], follow=follow, tail=tail
        )
        thread = threading.Thread(
            target=_run, args=(copier, results), name=f"alps-{stream}", daemon=True
        )
        thread.start()

    for _ in STREAMS:
        error = results.get()
        if error is not None:
            raise error


def _run(copier: StreamCopier, results: queue.Queue[BaseException | None]) -> None:
    try:
        copier.run()
    except BaseException as error:  # the main thread raises it again
        results.put(error)
    else:
        results.put(None)


class StreamCopier:
    """The copy of one stream of a job to a file descriptor."""

    def __init__(
        self,
        open_client: ClientFactory,
        job_id: int,
        stream: str,
        fd: int,
        *,
        follow: bool = False,
        tail: int | None = None,
    ) -> None:
        self.open_client = open_client
        self.job_id = job_id
        self.stream = stream
        self.fd = fd
        self.follow = follow
        # Start at the stream's last ``tail`` lines rather than at its start.
        self.tail = tail
        # Bytes of the stream written so far, counted from its start.
        self.position = 0

    def run(self) -> None:
        """Copy the stream, and with ``follow`` go on until the job has stopped."""
        with self.open_client() as client:
            # The first request shows at once whether the API is reachable and
            # the job exists, so that only later failures are retried.
            if self.tail is None:
                client.status(self.job_id)
            else:
                self.position = tail_offset(client, self.job_id, self.stream, self.tail)
            if self.follow:
                self._follow(client)
            else:
                self._copy(client.read_stream(self.job_id, self.stream, self.position))

    def _follow(self, client: ApiClient) -> None:
        failures = 0
        while True:
            position = self.position
            try:
                reply = client.open_stream(
                    self.job_id, self.stream, position, follow=True
                )
                self._copy(reply.chunks)
                return
            except ReplyTimeout:
                # The API (on Sanic 25.12) sends nothing, not even the reply's
                # headers, until the job writes to the stream or stops. So the
                # follow of a quiet job times out on a healthy connection, and
                # is sent again at once.
                continue
            except ClientError as error:
                if self.position > position:
                    failures = 0
                failures = self._wait_to_retry(error, failures)

    def _wait_to_retry(self, error: ClientError, failures: int) -> int:
        """Sleep before the next attempt and return the new count of failures.

        Raises ``error`` if a new attempt cannot help, and a TransportError once
        every attempt has failed.
        """
        retriable = isinstance(error, TransportError) or (
            isinstance(error, ApiError) and error.status in RETRY_STATUSES
        )
        if not retriable:
            raise error
        if failures >= len(RECONNECT_PAUSES):
            raise TransportError(
                f"lost the connection while following the {self.stream} of job "
                f"{self.job_id}, and {failures} attempts to reconnect failed: "
                f"{error.message}"
            ) from None
        time.sleep(RECONNECT_PAUSES[failures])
        return failures + 1

    def _copy(self, chunks: Iterator[bytes]) -> None:
        for chunk in chunks:
            write_all(self.fd, chunk)
            self.position += len(chunk)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``, which may take several writes on a pipe."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
