"""Fetching the job list again and again, on a worker thread, until stopped.

An admin gets every job (``/list?all=true``). The first reply tells whether the
caller is an admin: the API rejects ``all=true`` from a user with 403, and from
then on the poller requests the caller's own jobs only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from alps.client import ApiError, ClientError
from alps.tui import POLL_INTERVAL
from alps.tui.api import DashboardClient
from alps.tui.settings import Settings

# A list takes milliseconds, so a reply slower than this is a failure. The short
# timeout lets the dashboard report it soon and quit without a long wait.
POLL_READ_TIMEOUT = 5.0

Jobs = list[dict[str, Any]]


class JobPoller:
    """Fetches the jobs every ``interval`` seconds; ``run`` blocks, ``stop`` ends it.

    ``everyone`` is None until the first reply, then whether the caller gets
    every job (an admin) or only their own.
    """

    def __init__(
        self,
        settings: Settings,
        interval: float = POLL_INTERVAL,
        read_timeout: float = POLL_READ_TIMEOUT,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"invalid interval {interval}: must be > 0 seconds")
        self.settings = settings
        self.interval = interval
        self.read_timeout = read_timeout
        self.everyone: bool | None = None
        self._stopped = threading.Event()
        self._wake = threading.Event()
        self._client: DashboardClient | None = None

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def wake(self) -> None:
        """Fetch the list now rather than at the end of the current interval."""
        self._wake.set()

    def stop(self) -> None:
        """End ``run`` soon; safe to call from any thread."""
        self._stopped.set()
        self._wake.set()
        client = self._client
        if client is not None:
            client.interrupt()

    def run(
        self,
        on_jobs: Callable[[Jobs], None],
        on_error: Callable[[ClientError], None],
    ) -> None:
        """Fetch until ``stop``, passing each list or each failure to a callback."""
        try:
            while not self.stopped:
                self._poll_once(on_jobs, on_error)
                self._wake.wait(self.interval)
                self._wake.clear()
        finally:
            if self._client is not None:
                self._client.close()

    def _poll_once(
        self,
        on_jobs: Callable[[Jobs], None],
        on_error: Callable[[ClientError], None],
    ) -> None:
        try:
            jobs = self.fetch()
        except ClientError as error:
            if not self.stopped:
                on_error(error)
            return
        if not self.stopped:
            on_jobs(jobs)

    def fetch(self) -> Jobs:
        """Return the job list: every job for an admin, the caller's own otherwise."""
        client = self._connect()
        if self.everyone is not False:
            try:
                jobs = client.list_jobs(everyone=True)
            except ApiError as error:
                if error.status != 403:
                    raise
                self.everyone = False
            else:
                self.everyone = True
                return jobs
        return client.list_jobs(everyone=False)

    def _connect(self) -> DashboardClient:
        if self._client is None:
            self._client = self.settings.client(read_timeout=self.read_timeout)
            if self.stopped:
                # stop() may have run before self._client was set.
                self._client.interrupt()
        return self._client
