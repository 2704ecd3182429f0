"""Starting a job's shell: a clean process, inside the job's control group.

The shell starts in a new session with stdin from /dev/null, stdout and stderr on
the given pipes, every signal at its default and none blocked, umask 022, no
other descriptor open, and the job's environment and working folder. It is in
the job's control group before it runs a single instruction of the command.

Two ways lead there:

- With no cgroup, or a v1 one, ``subprocess.Popen`` starts the shell; with no
  account to switch to, CPython does that with ``vfork``, so none of the
  supervisor's memory is copied. The supervisor moves itself into the job's
  group first, so the shell is born there, and moves back out right after. Each
  move writes "0" to ``tasks``, which skips the kernel's global threadgroup lock.
- On v2, a thread may not leave its process's domain group, so each move would
  take that lock. The supervisor forks instead, and the child moves itself in
  and sets itself up in Python before it runs the shell.

glibc's ``posix_spawn`` would be quicker still, but it starts the child with the
two signals that glibc keeps for itself (32 and 33) ignored, and an ignored
signal stays ignored across ``exec``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any, NoReturn

from alps.process.cgroups import JobCgroup

SHELL = "/bin/sh"
JOB_UMASK = 0o022
_DEFAULT_SIGNALS = frozenset(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}


class LaunchError(Exception):
    """The job's shell could not be started; the message says why."""


def launch(
    spec: dict[str, Any], cgroup: JobCgroup | None, out_write: int, err_write: int
) -> subprocess.Popen | int:
    """Start ``/bin/sh -c COMMAND`` for ``spec``; return its Popen, or its PID.

    Keep the Popen until the job has ended: it must not be collected meanwhile,
    because ``subprocess`` would then reap the job behind the supervisor's back.
    """
    if cgroup is None or cgroup.version == 1:
        return _popen(spec, cgroup, out_write, err_write)
    return _fork(spec, cgroup, out_write, err_write)


def _popen(
    spec: dict[str, Any], cgroup: JobCgroup | None, out_write: int, err_write: int
) -> subprocess.Popen:
    user = spec.get("user") or {}
    if cgroup is not None:
        cgroup.join_self()
    try:
        return subprocess.Popen(
            ["sh", "-c", spec["command"]],
            executable=SHELL,
            stdin=subprocess.DEVNULL,
            stdout=out_write,
            stderr=err_write,
            cwd=spec["cwd"],
            env=spec["env"],
            start_new_session=True,
            restore_signals=True,
            umask=JOB_UMASK,
            user=user.get("uid"),
            group=user.get("gid"),
            extra_groups=user.get("groups"),
        )
    except OSError as error:
        raise LaunchError(f"{SHELL}: {error.strerror or error}") from None
    finally:
        if cgroup is not None:
            cgroup.leave_self()


def _fork(
    spec: dict[str, Any], cgroup: JobCgroup | None, out_write: int, err_write: int
) -> int:
    status_read, status_write = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        _exec_child(spec, cgroup, out_write, err_write, status_write)
    os.close(status_write)
    # The status pipe closes on a successful exec; otherwise it holds the error.
    with os.fdopen(status_read, "rb") as status:
        failure = status.read()
    if failure:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        raise LaunchError(failure.decode(errors="replace"))
    return pid


def _exec_child(
    spec: dict[str, Any],
    cgroup: JobCgroup | None,
    out_write: int,
    err_write: int,
    status_write: int,
) -> NoReturn:
    """In the forked child: set up a clean process and exec the shell."""
    try:
        if cgroup is not None:
            cgroup.join_self()
        os.setsid()
        signal.set_wakeup_fd(-1)
        for signum in _DEFAULT_SIGNALS:
            with contextlib.suppress(OSError, ValueError):
                signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.umask(JOB_UMASK)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_write, 1)
        os.dup2(err_write, 2)
        os.closerange(3, status_write)
        os.closerange(status_write + 1, os.sysconf("SC_OPEN_MAX"))
        user = spec.get("user")
        if user is not None:
            os.setgroups(user["groups"])
            os.setgid(user["gid"])
            os.setuid(user["uid"])
        os.chdir(spec["cwd"])
        os.execve(SHELL, ["sh", "-c", spec["command"]], spec["env"])
    except BaseException as error:
        message = getattr(error, "strerror", None) or repr(error)
        with contextlib.suppress(BaseException):
            os.write(status_write, f"{SHELL}: {message}".encode())
    os._exit(127)
