"""Following one output stream of a job, on a worker thread, until it ends.

A follow request ends when the job has stopped and every byte was sent. If the
connection breaks first (the API restarts, or a quiet job outlasts the read
timeout), the follower sends the request again from the byte after the last
one received, so nothing is shown twice or lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from alps.client import ClientError, StreamReply, TransportError
from alps.tui.api import DashboardClient
from alps.tui.settings import Settings

# Output before the last TAIL_BYTES of a stream is skipped when the pane opens,
# so that opening a job with gigabytes of output stays quick.
TAIL_BYTES = 256 * 1024
RETRY_SECONDS = 1.0


class StreamFollower:
    """Follows ``stream`` of job ``job_id``; ``run`` blocks, ``stop`` ends it.

    ``on_data`` gets each chunk of bytes, ``on_skip`` the number of bytes left
    out at the start, ``on_problem`` a message while the follow is failing and
    None once it works again.
    """

    def __init__(
        self,
        settings: Settings,
        job_id: int,
        stream: str,
        tail_bytes: int = TAIL_BYTES,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self.settings = settings
        self.job_id = job_id
        self.stream = stream
        self.tail_bytes = tail_bytes
        self.retry_seconds = retry_seconds
        self._stopped = threading.Event()
        self._client: DashboardClient | None = None

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def stop(self) -> None:
        """End ``run`` soon; safe to call from any thread."""
        self._stopped.set()
        client = self._client
        if client is not None:
            client.interrupt()

    def run(
        self,
        on_data: Callable[[bytes], None],
        on_skip: Callable[[int], None],
        on_problem: Callable[[str | None], None],
    ) -> bool:
        """Follow until the stream ends or ``stop``; return True at the stream's end.

        A ClientError other than a TransportError, such as the API's 404 once
        the job is gone, ends the follow too: its message goes to
        ``on_problem`` and ``run`` returns False.
        """
        offset: int | None = None
        failures = 0
        while not self.stopped:
            try:
                with self._open_client() as client:
                    offset, chunks = self._open_follow(client, offset, on_skip)
                    if failures:
                        failures = 0
                        on_problem(None)
                    for chunk in chunks:
                        offset += len(chunk)
                        on_data(chunk)
                        if self.stopped:
                            return False
                return True
            except TransportError as error:
                failures += 1
                if self.stopped:
                    return False
                # The first retry is at once: a read timeout on a quiet job
                # is expected and needs no message.
                if failures > 1:
                    on_problem(f"{error.message}; retrying")
                    self._stopped.wait(self.retry_seconds)
            except ClientError as error:
                # An ApiError such as 404 (the job is gone), or a credential
                # file that can no longer be read: asking again cannot help.
                if not self.stopped:
                    on_problem(error.message)
                return False
        return False

    def _open_client(self) -> DashboardClient:
        client = self.settings.client()
        self._client = client
        if self.stopped:
            # stop() may have run before self._client was set.
            client.interrupt()
        return client

    def _open_follow(
        self,
        client: DashboardClient,
        offset: int | None,
        on_skip: Callable[[int], None],
    ) -> tuple[int, Iterator[bytes]]:
        """Open the follow at ``offset``, or on the first try at the stream's tail.

        Return the offset the follow starts at and its chunks.
        """
        if offset is not None:
            return offset, self._follow_from(client, offset).chunks
        reply = self._follow_from(client, 0)
        size = reply.size or 0
        if size <= self.tail_bytes:
            return 0, reply.chunks
        client.close()
        skipped = size - self.tail_bytes
        on_skip(skipped)
        return skipped, self._follow_from(client, skipped).chunks

    def _follow_from(self, client: DashboardClient, offset: int) -> StreamReply:
        return client.open_stream(self.job_id, self.stream, offset, follow=True)
