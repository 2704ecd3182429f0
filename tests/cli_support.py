"""Run the installed ``alps`` console script, with its folders under a test's tmp_path.

``alps_env`` points ``HOME``, ``XDG_CONFIG_HOME`` and ``XDG_STATE_HOME`` into the
test's folder, so no test reads or writes a real home folder. ``run_alps`` runs a
command to its end; ``LiveAlps`` runs one in the background and records when
each line of its output arrives.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from helpers import console_script

STARTED = re.compile(r"Started Job (\d+) for (\S+)\n")


@dataclass(frozen=True)
class Result:
    """The exit status and output of one ``alps`` run."""

    code: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")


def alps_env(
    tmp_path: Path, config: Path | None = None, **extra: str
) -> dict[str, str]:
    """Return an environment for ``alps`` whose home and XDG folders are in tmp_path.

    ``config`` sets ``ALPS_CONFIG``; without it the CLI uses the XDG config folder.
    """
    env = dict(os.environ)
    for name in ("ALPS_CONFIG", "COLUMNS", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        env.pop(name, None)
    env["HOME"] = str(tmp_path / "home")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    if config is not None:
        env["ALPS_CONFIG"] = str(config)
    env.update(extra)
    return env


def default_config(tmp_path: Path) -> Path:
    """Return the CLI config path that ``alps_env`` without ``config`` selects."""
    return tmp_path / "config" / "alps" / "config.toml"


def alps_command() -> str:
    return console_script("alps")


def run_alps(
    *args: str | os.PathLike[str],
    env: dict[str, str],
    cwd: Path | None = None,
    timeout: float = 60.0,
) -> Result:
    """Run ``alps ARGS`` to its end and return its exit status and output."""
    completed = subprocess.run(
        [alps_command(), *map(str, args)],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


def ok(result: Result) -> Result:
    """Return ``result`` after checking that the command succeeded."""
    assert result.code == 0, result.err
    return result


def start_job(env: dict[str, str], command: str, *options: str) -> int:
    """Run ``alps start [OPTIONS] COMMAND`` and return the new job's ID."""
    result = ok(run_alps("start", *options, "--", command, env=env))
    match = STARTED.fullmatch(result.out)
    assert match, result.out
    return int(match.group(1))


def status_json(env: dict[str, str], job_id: int) -> dict:
    return json.loads(ok(run_alps("status", "--json", job_id, env=env)).out)


def wait_stopped(env: dict[str, str], job_id: int, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = status_json(env, job_id)
        if body["jobStatus"] == "stopped":
            return body
        assert time.monotonic() < deadline, f"job {job_id} still running"
        time.sleep(0.05)


@dataclass(frozen=True)
class Line:
    """One line of output and when it arrived, in ``time.time()`` seconds."""

    time: float
    data: bytes


class LiveAlps:
    """An ``alps`` command running in the background, its output read line by line.

    A thread per stream reads lines as they arrive and records their arrival
    time. Used as a context manager, it kills the command if it is still
    running at the end, so a failed test leaves no process behind.
    """

    def __init__(self, *args: str | os.PathLike[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [alps_command(), *map(str, args)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: dict[str, list[Line]] = {"stdout": [], "stderr": []}
        self._arrivals: dict[str, queue.Queue[Line]] = {
            "stdout": queue.Queue(),
            "stderr": queue.Queue(),
        }
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(name, pipe), daemon=True)
            for name, pipe in (
                ("stdout", self.process.stdout),
                ("stderr", self.process.stderr),
            )
        ]
        for reader in self._readers:
            reader.start()

    def __enter__(self) -> LiveAlps:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for reader in self._readers:
            reader.join(timeout=5)

    def _read(self, stream: str, pipe: IO[bytes]) -> None:
        for data in iter(pipe.readline, b""):
            line = Line(time.time(), data)
            self.lines[stream].append(line)
            self._arrivals[stream].put(line)

    def next_line(self, stream: str = "stdout", timeout: float = 10.0) -> Line:
        """Return the next line that arrives on ``stream``; fail after ``timeout``."""
        try:
            return self._arrivals[stream].get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no line on {stream} of alps within {timeout} seconds")

    def wait(self, timeout: float = 20.0) -> int:
        """Wait for the command to end and its output to be read; return its status."""
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def output(self, stream: str) -> bytes:
        return b"".join(line.data for line in self.lines[stream])
