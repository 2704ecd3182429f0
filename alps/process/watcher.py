"""Notice when a job's output files grow, through inotify, without polling.

Supervisors write output with ``splice``, which the kernel reports as IN_MODIFY on
the file (Linux 5.x and later). One thread reads the events of all watched job
folders and notifies one condition; waiters check their own predicate when woken.
Only jobs that somebody follows are watched, and a job's watch ends with the job.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import threading
from pathlib import Path

from alps.logs import event

logger = logging.getLogger(__name__)

IN_MODIFY = 0x00000002  # from <sys/inotify.h>
IN_CLOEXEC = os.O_CLOEXEC
IN_NONBLOCK = os.O_NONBLOCK


class OutputWatcher:
    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(IN_CLOEXEC | IN_NONBLOCK)
        if self._fd < 0:
            error = ctypes.get_errno()
            raise OSError(error, f"inotify_init1 failed: {os.strerror(error)}")
        self.changed = threading.Condition()
        self._watches: dict[int, int] = {}  # job ID -> watch descriptor
        self._lock = threading.Lock()
        self._closing = False
        self._wake_read, self._wake_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(
            target=self._read_events, name="alps-output-watcher", daemon=True
        )
        self._thread.start()

    def watch(self, job_id: int, folder: Path) -> None:
        """Start reporting writes to ``folder``'s files; a no-op if already done."""
        with self._lock:
            if job_id in self._watches:
                return
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(folder), IN_MODIFY)
            if wd < 0:
                error = ctypes.get_errno()
                if error != errno.ENOENT:
                    logger.warning(
                        event(
                            "output watch failed", id=job_id, error=os.strerror(error)
                        )
                    )
                return
            self._watches[job_id] = wd

    def unwatch(self, job_id: int) -> None:
        with self._lock:
            wd = self._watches.pop(job_id, None)
            if wd is not None:
                self._libc.inotify_rm_watch(self._fd, wd)
        self.notify()

    def notify(self) -> None:
        """Wake every waiter so that it checks its predicate again."""
        with self.changed:
            self.changed.notify_all()

    def close(self) -> None:
        self._closing = True
        os.write(self._wake_write, b"x")
        self._thread.join(timeout=5)
        os.close(self._fd)

    def _read_events(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        while not self._closing:
            poller.poll()
            try:
                # The events name the file but waiters only need to know that
                # something grew, so reading them is enough.
                while os.read(self._fd, 65536):
                    pass
            except BlockingIOError:
                pass
            self.notify()
