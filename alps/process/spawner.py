"""The spawner: a single-threaded helper process that forks job supervisors.

The worker serves RPC from many threads, and ``fork`` in a threaded Python process
may copy a lock held by another thread into the child, where it stays held for
good. So the worker forks nothing itself: it sends each job's spec to this process
over a ``SOCK_SEQPACKET`` socket (one message a request), and the spawner returns
a supervisor's PID together with a pidfd for it (``SCM_RIGHTS``). Each pidfd is
opened before the child can be reaped, so it always names that child.

Forking a Python process costs about half a millisecond, so the spawner keeps
POOL_SIZE supervisors forked ahead of need, idle, each reading its own spec pipe.
A request takes an idle one, writes the spec into its pipe and answers at once;
a new idle supervisor is forked once no request is waiting.

The spawner exits when the worker closes the socket; idle supervisors then read
the end of their pipes and exit too. Busy supervisors do not depend on the
spawner: they keep running, re-parented to init, until their jobs end.

Run as ``python -m alps.process.spawner FD``.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import select
import signal
import socket
import sys
from dataclasses import dataclass

from alps.process.supervisor import Supervisor

MAX_MESSAGE = 1 << 20
POOL_SIZE = 2
REFILL_DELAY_MS = 10


@dataclass
class Idle:
    pid: int
    pidfd: int
    spec_fd: int  # write end of the supervisor's spec pipe


class Spawner:
    def __init__(self, channel: socket.socket) -> None:
        self.channel = channel
        self.libc = _load_libc()
        self.idle: list[Idle] = []

    def serve(self) -> None:
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        poller = select.poll()
        poller.register(self.channel, select.POLLIN)
        poller.register(wake_read, select.POLLIN)
        # Objects that exist now stay out of the collector's way, so that the
        # supervisors forked later share their memory pages with this process.
        gc.freeze()

        while True:
            # Refill the pool once no request has come for REFILL_DELAY_MS: a
            # fork right after a hand-out would compete for the CPU with the
            # start it just served, and with the job that it started.
            timeout = REFILL_DELAY_MS if len(self.idle) < POOL_SIZE else None
            events = dict(poller.poll(timeout))
            _reap_children()
            if wake_read in events:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 4096)
            if self.channel.fileno() in events:
                request = self.channel.recv(MAX_MESSAGE)
                if not request:
                    return
                self._hand_out(request)
            elif len(self.idle) < POOL_SIZE:
                self._fork_idle()

    def _hand_out(self, spec: bytes) -> None:
        """Give the spec to an idle supervisor and send its PID and pidfd back."""
        try:
            supervisor = self.idle.pop(0) if self.idle else self._fork()
        except OSError as error:
            reply = {"error": f"fork failed: {error.strerror}"}
            self.channel.sendmsg([json.dumps(reply).encode()])
            return
        try:
            _write_all(supervisor.spec_fd, spec)
        finally:
            os.close(supervisor.spec_fd)
        try:
            message = json.dumps({"pid": supervisor.pid}).encode()
            socket.send_fds(self.channel, [message], [supervisor.pidfd])
        finally:
            os.close(supervisor.pidfd)

    def _fork_idle(self) -> None:
        with contextlib.suppress(OSError):
            self.idle.append(self._fork())

    def _fork(self) -> Idle:
        spec_read, spec_write = os.pipe2(os.O_CLOEXEC)
        # A stop may reach a supervisor before it has a SIGTERM handler, and the
        # default action would kill it without a record: the child starts with
        # SIGTERM blocked and unblocks it once it has its job and handler.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            os.close(spec_read)
            os.close(spec_write)
            raise
        if pid == 0:
            Supervisor(self.libc).wait_for_job(spec_read)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        os.close(spec_read)
        return Idle(pid=pid, pidfd=os.pidfd_open(pid), spec_fd=spec_write)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _reap_children() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _load_libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def main() -> None:
    channel = socket.socket(fileno=int(sys.argv[1]))
    Spawner(channel).serve()


if __name__ == "__main__":
    main()
