"""The per-job supervisor: the parent of one job's shell, independent of the worker.

The spawner forks one supervisor per job. The supervisor

1. starts ``/bin/sh -c CMD`` in a new session, inside the job's control group,
   with stdin from /dev/null and stdout and stderr on two pipes;
2. moves what arrives on the pipes into the job's ``stdout`` and ``stderr`` files
   with ``splice``, so output never passes through Python objects;
3. on SIGTERM (a stop request), sends SIGTERM to every process of the job, and
   SIGKILL to whatever is left after the stop grace;
4. when the shell exits, stops whatever it left behind in the same way, waits for
   both pipes to close, writes ``exit.json`` and exits.

Because the supervisor, not the worker, owns the pipes and the shell's exit status,
a job keeps running and keeps its output while the worker restarts; the next
worker finds the supervisor through ``supervisor.json`` and waits for it again.

The job's files are written here and only here:

- ``supervisor.json``: PIDs and start times of the supervisor and the shell, so a
  restarted worker can tell a live supervisor from a reused PID;
- ``exit.json``: how the job ended, written once everything is over.

Both records are reserved as 4 KiB of spaces before the job starts and later
overwritten in place, so a disk that the job's output filled up cannot keep the
supervisor from recording the end. A reader sees either blank space (not JSON,
so no record yet) or the whole record.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import select
import signal
import time
from typing import Any, NoReturn

from alps.process.cgroups import JobCgroup

CHUNK = 1 << 20  # bytes moved by one splice call, the size of a full pipe
PIPE_SIZE = 1 << 20  # the default maximum (/proc/sys/fs/pipe-max-size)
PR_SET_NAME = 15  # from <linux/prctl.h>
PR_SET_CHILD_SUBREAPER = 36
SHELL = "/bin/sh"
STOP_REQUESTED = "stopped on request"


def read_start_ticks(pid: int) -> int | None:
    """Return a process's start time in clock ticks since boot, or None if gone.

    A PID together with its start time names one process for good, because the
    kernel never gives a reused PID the same start time.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return None
    # The command name, field 2, may contain spaces and ")": split after its end.
    fields = text[text.rindex(b")") + 2 :].split()
    return int(fields[19])


RECORD_SIZE = 4096


def reserve_record(path: str) -> int:
    """Create a record file of blank space and return its descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.write(fd, b" " * RECORD_SIZE)
    return fd


def fill_record(fd: int, data: dict[str, Any]) -> None:
    """Overwrite a reserved record with ``data`` as JSON, padded with spaces."""
    text = json.dumps(data).encode()
    if len(text) > RECORD_SIZE and data.get("reason"):
        data = {**data, "reason": str(data["reason"])[:1000]}
        text = json.dumps(data).encode()
    os.pwrite(fd, text.ljust(RECORD_SIZE), 0)


class Supervisor:
    def __init__(self, spec: dict[str, Any], libc: ctypes.CDLL | None) -> None:
        self.spec = spec
        self.job_dir: str = spec["job_dir"]
        self.grace: float = spec["stop_grace"]
        self.cgroup = JobCgroup.from_dict(spec["cgroup"]) if spec["cgroup"] else None
        self.libc = libc
        self.job_pid = 0
        self.wait_status: int | None = None
        self.reason: str | None = None
        self.stop_requested = False
        self.kill_deadline: float | None = None
        self.killed = False
        self.start_error: str | None = None

    # Setup -------------------------------------------------------------------

    def run(self) -> NoReturn:
        self._detach()
        try:
            self.exit_record = reserve_record(os.path.join(self.job_dir, "exit.json"))
            pids_record = reserve_record(os.path.join(self.job_dir, "supervisor.json"))
        except OSError:
            # Without a place for the record the job cannot be run; the worker
            # reports a supervisor that ended without one.
            os._exit(1)
        try:
            pipes = self._start_job()
            if pipes is not None:
                self._write_pids(pids_record)
                self._watch(pipes)
        except BaseException as error:
            self.reason = self.reason or f"supervisor failed: {error!r}"
            with contextlib.suppress(BaseException):
                if self.job_pid:
                    self._kill_all()
                    self._reap(block=False)
        with contextlib.suppress(BaseException):
            self._finish()
        os._exit(0)

    def _detach(self) -> None:
        """Leave the spawner's session and fds, and become the job's subreaper."""
        os.setsid()
        signal.set_wakeup_fd(-1)
        # Orphans of the job are re-parented here instead of to init, so this
        # process reaps them and, without control groups, can still find them.
        if self.libc is not None:
            self.libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
            # The name that ps and top show, at most 15 bytes.
            name = f"alps-sup {self.spec['id']}".encode()[:15]
            self.libc.prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        # The spawner forked this process with SIGTERM blocked; a stop that came
        # early is delivered now, to the handler.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self.stop_requested = True

    def _start_job(self) -> tuple[int, int] | None:
        """Fork and exec the job's shell; return the read ends of its two pipes."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        self.out_file = os.open(os.path.join(self.job_dir, "stdout"), flags, 0o600)
        self.err_file = os.open(os.path.join(self.job_dir, "stderr"), flags, 0o600)
        out_read, out_write = os.pipe2(os.O_CLOEXEC)
        err_read, err_write = os.pipe2(os.O_CLOEXEC)
        for fd in (out_read, err_read):
            with contextlib.suppress(OSError):
                _set_pipe_size(fd)
            os.set_blocking(fd, False)
        if self.cgroup is not None:
            self.cgroup.create(self.spec.get("limits") or {})
        status_read, status_write = os.pipe2(os.O_CLOEXEC)

        pid = os.fork()
        if pid == 0:
            self._exec_job(out_write, err_write, status_write)
        self.job_pid = pid
        for fd in (out_write, err_write, status_write):
            os.close(fd)

        # The status pipe closes on a successful exec; otherwise it holds the error.
        with os.fdopen(status_read, "rb") as status:
            failure = status.read()
        if failure:
            self.start_error = failure.decode(errors="replace")
            self.reason = f"could not run the job: {self.start_error}"
            self._reap(block=True)
            os.close(out_read)
            os.close(err_read)
            return None
        return out_read, err_read

    def _exec_job(self, out_write: int, err_write: int, status_write: int) -> NoReturn:
        """In the forked child: set up a clean process and exec the shell."""
        try:
            if self.cgroup is not None:
                self.cgroup.join_self()
            os.setsid()
            signal.set_wakeup_fd(-1)
            for signum in signal.valid_signals():
                if signum not in (signal.SIGKILL, signal.SIGSTOP):
                    with contextlib.suppress(OSError, ValueError):
                        signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(out_write, 1)
            os.dup2(err_write, 2)
            os.closerange(3, status_write)
            os.closerange(status_write + 1, os.sysconf("SC_OPEN_MAX"))
            user = self.spec.get("user")
            if user is not None:
                os.setgroups(user["groups"])
                os.setgid(user["gid"])
                os.setuid(user["uid"])
            os.chdir(self.spec["cwd"])
            os.execve(SHELL, ["sh", "-c", self.spec["command"]], self.spec["env"])
        except BaseException as error:
            message = getattr(error, "strerror", None) or repr(error)
            with contextlib.suppress(BaseException):
                os.write(status_write, f"{SHELL}: {message}".encode())
        os._exit(127)

    def _write_pids(self, record: int) -> None:
        own = os.getpid()
        fill_record(
            record,
            {
                "pid": own,
                "start": read_start_ticks(own),
                "jobPid": self.job_pid,
                "jobStart": read_start_ticks(self.job_pid),
            },
        )

    # The loop ------------------------------------------------------------------

    def _watch(self, pipes: tuple[int, int]) -> None:
        """Move output and handle signals until the job and its leftovers are gone."""
        targets = {pipes[0]: self.out_file, pipes[1]: self.err_file}
        poller = select.poll()
        for fd in (*targets, self.wake_read):
            poller.register(fd, select.POLLIN)

        while True:
            for fd, _ in poller.poll(self._poll_timeout()):
                if fd == self.wake_read:
                    _drain(self.wake_read)
                elif not self._move(fd, targets):
                    poller.unregister(fd)
                    os.close(fd)
                    del targets[fd]
            self._reap(block=False)
            self._advance_stop()
            if self.wait_status is not None and not targets and self._is_empty():
                return

    def _poll_timeout(self) -> int | None:
        """Return how long to wait for an event, in milliseconds."""
        if self.kill_deadline is not None and not self.killed:
            return max(0, int((self.kill_deadline - time.monotonic()) * 1000))
        if self.wait_status is not None:
            # A process that is not a child of this one ends without a SIGCHLD
            # here, so check now and then whether the job is empty.
            return 100
        return None

    def _move(self, pipe: int, targets: dict[int, int]) -> bool:
        """Splice what is in ``pipe`` to its file; return False at end of stream."""
        try:
            return os.splice(pipe, targets[pipe], CHUNK) > 0
        except BlockingIOError:
            return True
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise
            # The output cannot be kept, so the job must not go on: end it now and
            # throw away what it still writes, so no writer blocks on a full pipe.
            if self.reason is None:
                self.reason = f"output could not be saved: {error.strerror}"
            targets[pipe] = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            self._kill_all()
            return True

    def _advance_stop(self) -> None:
        """Apply the stop policy: SIGTERM to all, then SIGKILL after the grace."""
        shell_done = self.wait_status is not None
        if self.kill_deadline is None and (self.stop_requested or shell_done):
            if self.stop_requested and not shell_done and self.reason is None:
                self.reason = STOP_REQUESTED
            self._signal_all(signal.SIGTERM)
            self.kill_deadline = time.monotonic() + self.grace
        if (
            self.kill_deadline is not None
            and not self.killed
            and time.monotonic() >= self.kill_deadline
        ):
            self._kill_all()

    # Process control -------------------------------------------------------------

    def _reap(self, block: bool) -> None:
        """Collect the shell's status and any orphans that were re-parented here."""
        while True:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.job_pid:
                self.wait_status = status
                block = False

    def _signal_all(self, signum: int) -> None:
        if self.cgroup is not None:
            self.cgroup.signal_all(signum)
            return
        # The shell's PID is safe to use as a group ID only until it is reaped.
        if self.wait_status is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.job_pid, signum)
        for pid in _descendants(os.getpid()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _kill_all(self) -> None:
        self.killed = True
        if self.cgroup is not None:
            self.cgroup.kill_all()
            return
        # Without a control group, kill what is below this process until nothing
        # is left: each killed process hands its children to this subreaper.
        for _ in range(100):
            self._signal_all(signal.SIGKILL)
            self._reap(block=False)
            if not _children():
                return
            time.sleep(0.005)

    def _is_empty(self) -> bool:
        if self.cgroup is not None:
            return not self.cgroup.pids()
        return not _children()

    # The record ---------------------------------------------------------------

    def _finish(self) -> None:
        stop_time = time.time()
        exit_code: int | None = None
        signal_name: str | None = None
        if self.wait_status is not None:
            code = os.waitstatus_to_exitcode(self.wait_status)
            if code < 0:
                exit_code = 128 - code
                signal_name = _signal_name(-code)
            else:
                exit_code = code
        if self.cgroup is not None:
            if self.cgroup.oom_killed() and self.reason is None:
                self.reason = "killed: the job went over its memory limit"
            self.cgroup.kill_all()
            self.cgroup.remove()
        fill_record(
            self.exit_record,
            {
                "exitCode": exit_code,
                "signal": signal_name,
                "reason": self.reason,
                "stopTime": stop_time,
            },
        )


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


def _children(pid: int | None = None) -> list[int]:
    """Return the PIDs of a process's children (of this one by default).

    As a subreaper, this process adopts the orphans of the job, so its children
    and their descendants are every process that the job left.
    """
    pid = os.getpid() if pid is None else pid
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(text) for text in children.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    pending = _children(pid)
    while pending and len(found) < 100_000:
        child = pending.pop()
        found.append(child)
        pending.extend(_children(child))
    return found


def _set_pipe_size(fd: int) -> None:
    import fcntl

    fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 512):
            pass
