"""The per-job supervisor: the parent of one job's shell, independent of the worker.

The spawner forks supervisors ahead of need and hands each one job's spec. The
supervisor

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
from alps.process.launch import LaunchError, launch

CHUNK = 1 << 20  # bytes moved by one splice call, the size of a full pipe
PIPE_SIZE = 1 << 20  # the default maximum (/proc/sys/fs/pipe-max-size)
PR_SET_NAME = 15  # from <linux/prctl.h>
PR_SET_CHILD_SUBREAPER = 36
STOP_REQUESTED = "stopped on request"
HELD_OPEN = "a process outside the job's group still held its output, which was cut off"
# How long the output pipes may stay open once every process of the job is gone.
DRAIN_SECONDS = 1.0


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
    """One job's supervisor, forked by the spawner before it has a job.

    ``wait_for_job`` runs in the fresh child: it sets the process up while the
    spawner still holds it idle, then reads the job's spec from ``spec_fd`` and
    runs the job. An idle supervisor whose spawner goes away exits.
    """

    def __init__(self, libc: ctypes.CDLL | None) -> None:
        self.libc = libc
        self.job_pid = 0
        self.wait_status: int | None = None
        self.reason: str | None = None
        self.stop_requested = False
        self.kill_deadline: float | None = None
        self.killed = False
        # When the group emptied while something still held the output pipes.
        self.drain_deadline: float | None = None

    def wait_for_job(self, spec_fd: int) -> NoReturn:
        self._detach(spec_fd)
        spec = _read_spec(spec_fd)
        if spec is None:
            os._exit(0)
        self._name(f"alps-sup {spec['id']}")
        # The spawner forked this process with SIGTERM blocked; a stop that came
        # early is delivered now, to the handler.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        self.run(spec)

    def run(self, spec: dict[str, Any]) -> NoReturn:
        self.spec = spec
        self.job_dir: str = spec["job_dir"]
        self.grace: float = spec["stop_grace"]
        self.cgroup = JobCgroup.from_dict(spec["cgroup"]) if spec["cgroup"] else None
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

    def _detach(self, keep_fd: int) -> None:
        """Leave the spawner's session and fds, and become the job's subreaper."""
        os.setsid()
        signal.set_wakeup_fd(-1)
        # Orphans of the job are re-parented here instead of to init, so this
        # process reaps them and, without control groups, can still find them.
        if self.libc is not None:
            self.libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        self._name("alps-sup idle")
        os.closerange(3, keep_fd)
        os.closerange(keep_fd + 1, os.sysconf("SC_OPEN_MAX"))
        # Ignored signals stay ignored across exec, and the job must start with
        # none ignored. So the supervisor gives SIGINT and SIGHUP handlers that do
        # nothing (exec resets those), and takes back anything it inherited as
        # ignored, except SIGPIPE and SIGXFSZ, which Python ignores on purpose and
        # subprocess resets for the job.
        for signum in _RESETTABLE:
            with contextlib.suppress(OSError, ValueError):
                if signal.getsignal(signum) == signal.SIG_IGN:
                    signal.signal(signum, signal.SIG_DFL)
        for signum in (signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, _ignore)
        self.wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    def _name(self, name: str) -> None:
        """Set the name that ps and top show, at most 15 bytes."""
        if self.libc is not None:
            self.libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self.stop_requested = True

    def _start_job(self) -> tuple[int, int] | None:
        """Start the job's shell; return the read ends of its two pipes."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        self.out_file = os.open(os.path.join(self.job_dir, "stdout"), flags, 0o600)
        self.err_file = os.open(os.path.join(self.job_dir, "stderr"), flags, 0o600)
        out_read, out_write = os.pipe2(os.O_CLOEXEC)
        err_read, err_write = os.pipe2(os.O_CLOEXEC)
        for fd in (out_read, err_read):
            with contextlib.suppress(OSError):
                _set_pipe_size(fd)
            os.set_blocking(fd, False)
        user = self.spec.get("user")
        if user is not None:
            # A pipe belongs to whoever made it, and "> /dev/stdout" opens it
            # again by its /proc path, which checks that owner: the pipes must
            # be the job's account's, or the job could not reopen its own stdout.
            for fd in (out_write, err_write):
                os.fchown(fd, user["uid"], user["gid"])
        limits = self.spec.get("limits") or {}
        # On v1 the supervisor stays in the job's group while it starts the job.
        spare = 1 if self.cgroup is not None and self.cgroup.version == 1 else 0
        if self.cgroup is not None:
            self.cgroup.create(limits, spare_pids=spare)

        try:
            started = launch(self.spec, self.cgroup, out_write, err_write)
        except LaunchError as error:
            self.reason = f"could not run the job: {error}"
            for fd in (out_read, err_read):
                os.close(fd)
            return None
        finally:
            os.close(out_write)
            os.close(err_write)
        # Kept so that it is never collected, which would reap the job.
        self.process = started
        self.job_pid = started if isinstance(started, int) else started.pid
        if spare and self.cgroup is not None and "pids" in limits:
            # The supervisor has left the group: the job gets its exact limit.
            self.cgroup.write_limit("pids", limits["pids"])
        return out_read, err_read

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
            if self.wait_status is None or not self._is_empty():
                continue
            if not targets:
                return
            if self._held_open_too_long():
                # Only a process that left the job's group (root can) still has
                # the pipes open; the job is over, so its output ends here.
                self.reason = (
                    f"{self.reason}; {HELD_OPEN}" if self.reason else HELD_OPEN
                )
                for fd in targets:
                    os.close(fd)
                return

    def _held_open_too_long(self) -> bool:
        """Return True once the pipes outlived an empty group by DRAIN_SECONDS."""
        if self.drain_deadline is None:
            self.drain_deadline = time.monotonic() + DRAIN_SECONDS
        return time.monotonic() >= self.drain_deadline

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


_RESETTABLE = frozenset(signal.valid_signals()) - {
    signal.SIGKILL,
    signal.SIGSTOP,
    signal.SIGPIPE,
    signal.SIGXFSZ,
}


def _ignore(signum: int, frame: object) -> None:
    """Do nothing: a handler, unlike SIG_IGN, does not pass to the job."""


def _read_spec(fd: int) -> dict[str, Any] | None:
    """Read the job's spec, JSON up to end of file; None if the spawner is gone."""
    parts = []
    while chunk := os.read(fd, 1 << 16):
        parts.append(chunk)
    os.close(fd)
    return json.loads(b"".join(parts)) if parts else None


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
