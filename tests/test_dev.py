"""``alps dev``: the files it writes, the servers it runs, and how it stops."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import stat
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_support import alps_command, alps_env, default_config, run_alps
from cryptography import x509

from alps import certs
from alps.acl import Role, load_acl
from alps.config import load_server_config

from helpers import free_port, process_alive

START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
KEY_FILES = ["ca.key", "server.key", "user.key", "admin.key"]
ALL_FILES = [
    "ca.crt",
    "server.crt",
    "user.crt",
    "admin.crt",
    *KEY_FILES,
    "acl.toml",
    "server.toml",
    "user.toml",
    "admin.toml",
]


@dataclass
class DevRun:
    """One ``alps dev`` process, its summary lines and its two children."""

    folder: Path
    env: dict[str, str]
    process: subprocess.Popen
    log: Path
    summary: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        line = next(line for line in self.summary if "API:" in line)
        match = re.search(r"https://127\.0\.0\.1:(\d+)$", line)
        assert match, line
        return int(match.group(1))

    def children(self) -> dict[str, int]:
        """Return the PIDs of the worker and the API, by name."""
        pid = self.process.pid
        found = {}
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            name = "worker" if b"alps.services.worker" in cmdline else "api"
            found[name] = int(child)
        return found

    def read_summary(self) -> None:
        """Read stdout until the summary ends; fail if alps dev exits first."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        pending = b""
        deadline = time.monotonic() + START_TIMEOUT
        while not self.summary or self.summary[-1] != "Press Ctrl-C to stop.":
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"alps dev did not start:\n{self.log.read_text()}")
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                continue
            data = os.read(fd, 65536)
            if not data:
                self.process.wait(timeout=STOP_TIMEOUT)
                pytest.fail(
                    f"alps dev exited with {self.process.returncode}:\n"
                    + self.log.read_text()
                )
            *lines, pending = (pending + data).split(b"\n")
            self.summary += [line.decode() for line in lines]

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` and return the exit status; SIGKILL after a timeout."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail("alps dev did not stop within its timeout")
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


def launch(folder: Path, env: dict[str, str], *options: str) -> DevRun:
    log = folder.parent / f"{folder.name}-dev.log"
    with log.open("ab") as log_file:
        process = subprocess.Popen(
            [alps_command(), "dev", "--dir", str(folder), "--port", "0", *options],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
        )
    return DevRun(folder, env, process, log)


@pytest.fixture
def start_dev() -> Iterator:
    """Start ``alps dev`` runs that are stopped at the end even if a test fails."""
    runs: list[DevRun] = []

    def start(folder: Path, env: dict[str, str], *options: str) -> DevRun:
        run = launch(folder, env, *options)
        runs.append(run)
        run.read_summary()
        return run

    yield start
    for run in runs:
        run.stop()


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevRun]:
    """One ``alps dev`` shared by the tests that only read from it."""
    home = tmp_path_factory.mktemp("home")
    run = launch(home / "dev", alps_env(home), "--retention", "10m")
    try:
        run.read_summary()
        yield run
    finally:
        run.stop()


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def read_toml(path: Path) -> dict:
    with path.open("rb") as file:
        return tomllib.load(file)


def job_id_of(started: str) -> int:
    match = re.fullmatch(r"Started Job (\d+) for \S+\n", started)
    assert match, started
    return int(match.group(1))


def wait_stopped(env: dict[str, str], job_id: int) -> None:
    deadline = time.monotonic() + 10
    while "stopped" not in run_alps("status", job_id, env=env).out:
        assert time.monotonic() < deadline
        time.sleep(0.05)


# A running alps dev --------------------------------------------------------------


def test_dev_prints_address_folder_and_admin_line(dev: DevRun):
    text = "\n".join(dev.summary)

    assert f"  API:      https://127.0.0.1:{dev.port}" in dev.summary
    assert f"  Folder:   {dev.folder} (new certificates)" in dev.summary
    assert f"export ALPS_CONFIG={dev.folder / 'admin.toml'}" in text
    assert dev.summary[-1] == "Press Ctrl-C to stop."


def test_dev_port_zero_picks_a_free_port(dev: DevRun):
    assert dev.port != 0
    assert dev.port != 8443


def test_dev_writes_every_file(dev: DevRun):
    missing = [name for name in ALL_FILES if not (dev.folder / name).is_file()]

    assert missing == []


@pytest.mark.parametrize("name", [*KEY_FILES, "user.toml", "admin.toml"])
def test_dev_private_files_have_mode_0600(dev: DevRun, name: str):
    assert file_mode(dev.folder / name) == 0o600


@pytest.mark.parametrize("name", [".", "run", "state"])
def test_dev_folders_have_mode_0700(dev: DevRun, name: str):
    assert file_mode(dev.folder / name) == 0o700


def test_dev_server_config_has_port_and_retention(dev: DevRun):
    config = load_server_config(dev.folder / "server.toml", need_api=True)

    assert config.api is not None
    assert (config.api.host, config.api.port) == ("127.0.0.1", dev.port)
    assert config.api.audit_log == dev.folder / "audit.jsonl"
    assert config.worker.retention == 600
    assert config.worker.socket == dev.folder / "run" / "worker.sock"
    assert config.worker.state_dir == dev.folder / "state"


def test_dev_acl_has_user_and_admin(dev: DevRun):
    acl = load_acl(dev.folder / "acl.toml")

    assert acl.roles == {"user@example.com": Role.USER, "admin@example.com": Role.ADMIN}


@pytest.mark.parametrize(
    ("name", "email"), [("user", "user@example.com"), ("admin", "admin@example.com")]
)
def test_dev_client_certificates_carry_identities(dev: DevRun, name: str, email: str):
    cert = x509.load_pem_x509_certificate((dev.folder / f"{name}.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)

    assert names.value.get_values_for_type(x509.RFC822Name) == [email]


def test_dev_server_certificate_names_loopback(dev: DevRun):
    cert = x509.load_pem_x509_certificate((dev.folder / "server.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)

    assert names.value.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in names.value.get_values_for_type(x509.IPAddress)] == [
        "127.0.0.1"
    ]


@pytest.mark.parametrize("name", ["user", "admin"])
def test_dev_cli_configs_point_at_the_server(dev: DevRun, name: str):
    assert read_toml(dev.folder / f"{name}.toml") == {
        "server": {
            "address": f"127.0.0.1:{dev.port}",
            "ca": str(dev.folder / "ca.crt"),
        },
        "client": {
            "cert": str(dev.folder / f"{name}.crt"),
            "key": str(dev.folder / f"{name}.key"),
        },
    }


def test_dev_writes_user_into_default_cli_config(dev: DevRun):
    home = dev.folder.parent

    assert read_toml(default_config(home)) == read_toml(dev.folder / "user.toml")
    assert file_mode(default_config(home)) == 0o600


def test_dev_serves_the_user_with_default_config(dev: DevRun):
    started = run_alps("start", "sleep 100", env=dev.env)
    job_id = job_id_of(started.out)
    stopped = run_alps("stop", job_id, env=dev.env)

    assert started.out.endswith(" for user@example.com\n")
    assert stopped.out == (
        f"Stopped Job {job_id}. Output will be available for 10 minutes.\n"
    )


def test_dev_serves_the_admin_with_admin_config(dev: DevRun, tmp_path: Path):
    env = alps_env(tmp_path, dev.folder / "admin.toml")

    started = run_alps("start", "true", env=env)

    assert started.code == 0
    assert started.out.endswith(" for admin@example.com\n")


# Stopping and running again ------------------------------------------------------


def test_dev_stops_on_sigterm_and_rerun_keeps_jobs(start_dev, tmp_path: Path):
    folder = tmp_path / "dev"
    env = alps_env(tmp_path)
    first = start_dev(folder, env)
    kept = job_id_of(run_alps("start", "echo kept", env=env).out)
    running = job_id_of(run_alps("start", "sleep 100", env=env).out)
    wait_stopped(env, kept)
    children = first.children()
    ca_before = (folder / "ca.crt").read_bytes()
    user_before = (folder / "user.crt").read_bytes()

    assert first.stop(signal.SIGTERM) == 0
    assert sorted(children) == ["api", "worker"]
    assert [pid for pid in children.values() if process_alive(pid)] == []

    second = start_dev(folder, env)

    assert f"  Folder:   {folder} (reused certificates)" in second.summary
    assert (folder / "ca.crt").read_bytes() == ca_before
    assert (folder / "user.crt").read_bytes() == user_before
    assert run_alps("output", kept, env=env).stdout == b"kept\n"
    status = run_alps("status", running, env=env).out
    assert "Exit code:    143" in status
    assert "Signal:       SIGTERM" in status
    assert "Reason:       stopped because the worker shut down" in status
    assert second.stop(signal.SIGINT) == 0


def test_dev_replaces_certificate_near_expiry(start_dev, tmp_path: Path):
    folder = tmp_path / "dev"
    env = alps_env(tmp_path)
    start_dev(folder, env).stop()
    ca = certs.load(folder / "ca.crt", folder / "ca.key")
    expiry = datetime.now(UTC) + timedelta(hours=1)
    short = certs.issue_client(ca, "user@example.com", not_after=expiry)
    short.write(folder / "user.crt", folder / "user.key")
    short_bytes = (folder / "user.crt").read_bytes()
    server_before = (folder / "server.crt").read_bytes()

    start_dev(folder, env)

    assert (folder / "user.crt").read_bytes() != short_bytes
    assert (folder / "server.crt").read_bytes() == server_before
    assert run_alps("list", env=env).code == 0


def test_dev_exits_1_when_worker_dies(start_dev, tmp_path: Path):
    run = start_dev(tmp_path / "dev", alps_env(tmp_path))
    children = run.children()

    # Both PIDs belong to the alps dev that this test started.
    os.kill(children["worker"], signal.SIGKILL)
    code = run.process.wait(timeout=STOP_TIMEOUT)

    log = run.log.read_text()
    assert code == 1
    assert "alps: error: the worker ended unexpectedly: killed by SIGKILL" in log
    assert "Stopped the API." in log
    assert not process_alive(children["api"])


def test_dev_leaves_alps_config_alone_when_set(start_dev, tmp_path: Path):
    mine = tmp_path / "mine.toml"
    mine.write_text('[server]\naddress = "alps.example.org:8443"\n')
    env = alps_env(tmp_path, mine)

    run = start_dev(tmp_path / "dev", env)

    assert mine.read_text() == '[server]\naddress = "alps.example.org:8443"\n'
    assert not default_config(tmp_path).exists()
    assert any(
        f"export ALPS_CONFIG={tmp_path / 'dev' / 'user.toml'}" in line
        for line in run.summary
    )


def test_dev_saves_previous_default_config(start_dev, tmp_path: Path):
    path = default_config(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('[server]\naddress = "alps.example.org:8443"\n')

    start_dev(tmp_path / "dev", alps_env(tmp_path))

    backup = path.with_name("config.toml.bak")
    assert backup.read_text() == '[server]\naddress = "alps.example.org:8443"\n'
    assert file_mode(backup) == 0o600


# Refusals before anything starts -------------------------------------------------


def test_dev_reports_port_in_use(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = run_alps(
            "dev", "--dir", tmp_path / "dev", "--port", port, env=alps_env(tmp_path)
        )

    assert result.code == 1
    assert f"port {port} on 127.0.0.1 is in use" in result.err
    assert "--port 0" in result.err


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another account needs root")
def test_dev_run_as_runs_jobs_as_the_account(start_dev, tmp_path: Path):
    env = alps_env(tmp_path)
    dev_run = start_dev(tmp_path / "dev", env, "--run-as", "nobody")
    job = job_id_of(run_alps("start", "id -un", env=env).out)
    wait_stopped(env, job)

    assert run_alps("output", job, env=env).stdout == b"nobody\n"
    assert dev_run.stop(signal.SIGTERM) == 0


def test_dev_rejects_unknown_run_as_account(tmp_path: Path):
    result = run_alps(
        "dev",
        "--dir",
        tmp_path / "dev",
        "--run-as",
        "alpsnosuchaccount",
        env=alps_env(tmp_path),
    )

    assert result.code == 1
    assert "alps: error: --run-as: no account 'alpsnosuchaccount'" in result.err


def test_dev_rejects_invalid_retention(tmp_path: Path):
    result = run_alps(
        "dev", "--dir", tmp_path / "dev", "--retention", "soon", env=alps_env(tmp_path)
    )

    assert result.code == 1
    assert "alps: error: --retention: invalid duration 'soon'" in result.err


def test_dev_rejects_invalid_port(tmp_path: Path):
    result = run_alps("dev", "--port", "70000", env=alps_env(tmp_path))

    assert result.code == 2
    assert "invalid port '70000'" in result.err


def test_dev_default_folder_is_under_xdg_state_home(tmp_path: Path):
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()

        run_alps("dev", "--port", port, env=alps_env(tmp_path))

    assert file_mode(tmp_path / "state" / "alps" / "dev") == 0o700


def test_dev_rejects_folder_writable_by_others(tmp_path: Path):
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)

    result = run_alps("dev", "--dir", folder, env=alps_env(tmp_path))

    assert result.code == 1
    assert f"the dev folder {folder} is writable by other users (mode 777)" in (
        result.err
    )
    assert not (folder / "ca.key").exists()


def test_dev_rejects_folder_too_deep_for_socket(tmp_path: Path):
    folder = tmp_path / ("d" * 100)

    result = run_alps("dev", "--dir", folder, "--port", "0", env=alps_env(tmp_path))

    assert result.code == 1
    assert "is longer than 107 bytes" in result.err
    assert "choose a shorter folder with --dir" in result.err
    assert not (folder / "ca.key").exists()
