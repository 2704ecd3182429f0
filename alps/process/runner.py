"""The worker's side of job processes: spawn supervisors, signal them, see them end.

``Runner`` keeps a pidfd for each job's supervisor and one thread that waits on all
of them with epoll, so the end of a job is noticed as it happens, with no polling
and no thread per job. The pidfds also make signals race-free: a pidfd names one
process, never a later process that got the same PID.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

from alps.logs import event
from alps.process.supervisor import read_start_ticks

logger = logging.getLogger(__name__)


class SpawnError(Exception):
    """The spawner could not start a supervisor."""


class Runner:
    def __init__(self, on_exit: Callable[[int], None]) -> None:
        self._on_exit = on_exit
        self._spawn_lock = threading.Lock()
        self._channel: socket.socket | None = None
        self._spawner: subprocess.Popen | None = None
        self._pidfds: dict[int, int] = {}  # job ID -> pidfd of its supervisor
        self._jobs_by_fd: dict[int, int] = {}
        self._fds_lock = threading.Lock()
        self._epoll = select.epoll()
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll.register(self._wake_read, select.EPOLLIN)
        self._closing = False
        self._thread = threading.Thread(
            target=self._wait_for_exits, name="alps-reaper", daemon=True
        )

    def start(self) -> None:
        self._start_spawner()
        self._thread.start()

    def close(self) -> None:
        """Stop watching and let the spawner exit; supervisors keep running."""
        self._closing = True
        os.write(self._wake_write, b"x")
        self._thread.join(timeout=5)
        with self._spawn_lock:
            self._stop_spawner()
        with self._fds_lock:
            for pidfd in self._pidfds.values():
                os.close(pidfd)
            self._pidfds.clear()
            self._jobs_by_fd.clear()

    # Spawning -----------------------------------------------------------------

    def spawn(self, job_id: int, spec: dict[str, Any]) -> int:
        """Start a supervisor for ``job_id``; return its PID."""
        message = json.dumps(spec).encode()
        with self._spawn_lock:
            try:
                reply, fds = self._request(message)
            except OSError:
                # The spawner died (it should not): start a new one and try once
                # more. A request that reached a dead spawner started nothing.
                logger.warning(event("spawner restarted", job=job_id))
                self._stop_spawner()
                self._start_spawner()
                reply, fds = self._request(message)
        if "error" in reply:
            raise SpawnError(reply["error"])
        self._watch_fd(job_id, fds[0])
        return int(reply["pid"])

    def _request(self, message: bytes) -> tuple[dict[str, Any], list[int]]:
        assert self._channel is not None
        self._channel.sendmsg([message])
        data, fds, _, _ = socket.recv_fds(self._channel, 4096, 1)
        if not data:
            raise ConnectionResetError("the spawner closed its socket")
        return json.loads(data), fds

    def _start_spawner(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        # -I keeps the working folder and PYTHON* variables out of the spawner's
        # import path, so it runs the installed ALPS and nothing else.
        command = [sys.executable, "-I", "-m", "alps.process.spawner"]
        self._spawner = subprocess.Popen(
            [*command, str(theirs.fileno())],
            # Supervisors inherit this environment; the worker's stays private.
            env={"PATH": os.defpath, "LANG": "C.UTF-8"},
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        theirs.close()
        self._channel = ours

    def _stop_spawner(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._spawner is not None:
            try:
                self._spawner.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._spawner.kill()
                self._spawner.wait()
            self._spawner = None

    # Watching -----------------------------------------------------------------

    def adopt(self, job_id: int, pid: int, start_ticks: int | None) -> bool:
        """Watch a supervisor started by an earlier worker; False if it is gone."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        # The pidfd is bound to whatever process has the PID now; it is the
        # supervisor only if that process started when the supervisor did.
        if start_ticks is None or read_start_ticks(pid) != start_ticks:
            os.close(pidfd)
            return False
        self._watch_fd(job_id, pidfd)
        return True

    def stop(self, job_id: int) -> bool:
        """Ask a job's supervisor to stop the job; False if it has already ended."""
        with self._fds_lock:
            pidfd = self._pidfds.get(job_id)
            if pidfd is None:
                return False
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGTERM)
            except ProcessLookupError:
                return False
        return True

    def _watch_fd(self, job_id: int, pidfd: int) -> None:
        with self._fds_lock:
            self._pidfds[job_id] = pidfd
            self._jobs_by_fd[pidfd] = job_id
            self._epoll.register(pidfd, select.EPOLLIN)

    def _wait_for_exits(self) -> None:
        while not self._closing:
            for fd, _ in self._epoll.poll():
                if fd == self._wake_read:
                    continue
                with self._fds_lock:
                    job_id = self._jobs_by_fd.pop(fd, None)
                    if job_id is None:
                        continue
                    del self._pidfds[job_id]
                    self._epoll.unregister(fd)
                    os.close(fd)
                try:
                    self._on_exit(job_id)
                except Exception:
                    logger.exception(event("job end not recorded", job=job_id))

    def watched(self) -> list[int]:
        with self._fds_lock:
            return list(self._pidfds)
