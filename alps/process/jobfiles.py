"""A job's folder under the state folder, and the files the supervisor leaves in it.

``jobs/<ID>/`` (mode 0700) holds ``stdout`` and ``stderr``, ``supervisor.json``
with the PIDs of the supervisor and the job's shell, and ``exit.json`` once the
job has ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from alps.process.cgroups import JobCgroup
from alps.process.supervisor import read_start_ticks

STREAMS = ("stdout", "stderr")


def lost_record(reason: str) -> dict[str, Any]:
    """Return an exit record for a job whose real exit status is unknown."""
    return {"exitCode": None, "signal": None, "reason": reason, "stopTime": time.time()}


class JobFiles:
    def __init__(self, jobs_dir: Path, job_id: int) -> None:
        self.folder = jobs_dir / str(job_id)

    def create_folder(self) -> None:
        self.folder.mkdir(mode=0o700, exist_ok=True)

    def read_exit(self) -> dict[str, Any] | None:
        return self._read_json("exit.json")

    def read_pids(self) -> dict[str, Any] | None:
        return self._read_json("supervisor.json")

    def _read_json(self, name: str) -> dict[str, Any] | None:
        try:
            with open(self.folder / name, "rb") as file:
                data = json.load(file)
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def read_tail(self, stream: str, limit: int) -> tuple[int, int, bytes]:
        """Return (size, offset, data) for at most ``limit`` bytes at the end."""
        try:
            fd = os.open(self.folder / stream, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0, 0, b""
        try:
            size = os.fstat(fd).st_size
            offset = max(0, size - limit)
            return size, offset, _read_exactly(fd, size - offset, offset)
        finally:
            os.close(fd)

    def size(self, stream: str) -> int:
        try:
            return os.stat(self.folder / stream).st_size
        except FileNotFoundError:
            return 0

    def read_window(self, stream: str, offset: int, length: int) -> tuple[int, bytes]:
        """Return (size, data): up to ``length`` bytes of the stream from ``offset``."""
        try:
            fd = os.open(self.folder / stream, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0, b""
        try:
            size = os.fstat(fd).st_size
            count = max(0, min(length, size - offset))
            return size, _read_exactly(fd, count, offset)
        finally:
            os.close(fd)

    def kill_leftovers(self, cgroup: JobCgroup | None) -> None:
        """SIGKILL what is left of a job whose supervisor is gone."""
        if cgroup is not None:
            cgroup.kill_all()
            cgroup.remove()
            return
        pids = self.read_pids()
        if not pids or not pids.get("jobPid"):
            return
        # The shell's PID is still its group's ID only while it is the same process.
        job_pid = int(pids["jobPid"])
        if read_start_ticks(job_pid) == pids.get("jobStart"):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job_pid, signal.SIGKILL)


def _read_exactly(fd: int, count: int, offset: int) -> bytes:
    parts = []
    while count > 0:
        chunk = os.pread(fd, count, offset)
        if not chunk:
            break
        parts.append(chunk)
        count -= len(chunk)
        offset += len(chunk)
    return b"".join(parts)
