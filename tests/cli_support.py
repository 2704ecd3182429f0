"""Run the installed ``alps`` console script, with its folders under a test's tmp_path.

``alps_env`` points ``HOME``, ``XDG_CONFIG_HOME`` and ``XDG_STATE_HOME`` into the
test's folder, so no test reads or writes a real home folder.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

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
