"""The spawner: a single-threaded helper process that forks job supervisors.

The worker serves RPC from many threads, and ``fork`` in a threaded Python process
may copy a lock held by another thread into the child, where it stays held for
good. So the worker forks nothing itself: it sends each job's spec to this process
over a ``SOCK_SEQPACKET`` socket (one message a request), and the spawner forks a
supervisor and returns its PID together with a pidfd for it (``SCM_RIGHTS``). The
pidfd is opened before the child can be reaped, so it always names that child.

The spawner exits when the worker closes the socket. Supervisors do not depend on
it: they keep running, re-parented to init, until their jobs end.

Run as ``python -m alps.process.spawner FD``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import sys

from alps.process.supervisor import Supervisor

MAX_MESSAGE = 1 << 20


def serve(channel: socket.socket) -> None:
    libc = _load_libc()
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    poller = select.poll()
    poller.register(channel, select.POLLIN)
    poller.register(wake_read, select.POLLIN)

    while True:
        events = dict(poller.poll())
        _reap_supervisors()
        if wake_read in events:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_read, 4096)
        if channel.fileno() not in events:
            continue
        request = channel.recv(MAX_MESSAGE)
        if not request:
            return
        _spawn(channel, json.loads(request), libc)


def _spawn(channel: socket.socket, spec: dict, libc: ctypes.CDLL | None) -> None:
    # A stop may reach the supervisor before it has a SIGTERM handler, and the
    # default action would kill it without a record: the child starts with
    # SIGTERM blocked and unblocks it once the handler is in place.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        pid = os.fork()
    except OSError as error:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        reply = {"error": f"fork failed: {error.strerror}"}
        channel.sendmsg([json.dumps(reply).encode()])
        return
    if pid == 0:
        channel.close()
        Supervisor(spec, libc).run()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    pidfd = os.pidfd_open(pid)
    try:
        socket.send_fds(channel, [json.dumps({"pid": pid}).encode()], [pidfd])
    finally:
        os.close(pidfd)


def _reap_supervisors() -> None:
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
    serve(channel)


if __name__ == "__main__":
    main()
