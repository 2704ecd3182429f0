"""Helpers for the tests: run ALPS from its console scripts and wait on it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w

from alps import certs
from alps.ipc import WorkerClient

READY_TIMEOUT = 20.0
USERS = {
    "user": ("user@example.com", "user"),
    "admin": ("admin@example.com", "admin"),
    "other": ("other@example.com", "user"),
}


def console_script(name: str) -> str:
    """Return the path of an installed console script, next to this Python first."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"console script {name!r} is not installed; run pip install .")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Pki:
    """A CA with a server certificate and client certificates, as files."""

    folder: Path
    ca: certs.Issued

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.crt"

    def cert(self, name: str) -> Path:
        return self.folder / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"

    def issue(self, name: str, email: str | None = None, **options: Any) -> None:
        """Write ``NAME.crt`` and ``NAME.key`` for a client certificate."""
        certs.issue_client(self.ca, email, **options).write(
            self.cert(name), self.key(name)
        )


@dataclass
class AlpsServer:
    """A worker and an API run from their console scripts, with their settings."""

    folder: Path
    pki: Pki
    worker_settings: dict[str, Any]
    # ACL entries beyond the standard users: identity -> role.
    extra_users: dict[str, str] = field(default_factory=dict)
    api_settings: dict[str, Any] = field(default_factory=dict)
    # ACL run_as entries: identity -> account.
    run_as: dict[str, str] = field(default_factory=dict)
    port: int = 0
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.folder / "server.toml"

    @property
    def socket_path(self) -> Path:
        return self.folder / "run" / "worker.sock"

    @property
    def state_dir(self) -> Path:
        return self.folder / "state"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"https://{self.address}"

    def log(self, service: str) -> str:
        path = self.folder / f"{service}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def write_config(self) -> None:
        (self.folder / "run").mkdir(mode=0o700, exist_ok=True)
        users = dict(USERS.values()) | self.extra_users
        entries: dict[str, dict[str, str]] = {
            email: {"role": role} for email, role in users.items()
        }
        for email, account in self.run_as.items():
            entries[email]["run_as"] = account
        acl = {"users": entries}
        (self.folder / "acl.toml").write_text(tomli_w.dumps(acl))
        worker = {
            "socket": str(self.socket_path),
            "state_dir": str(self.state_dir),
            "retention": "1h",
            "stop_grace": "3s",
            "keep_jobs_on_exit": False,
            **self.worker_settings,
        }
        api = {
            "listen": self.address,
            "ca": str(self.pki.ca_cert),
            "cert": str(self.pki.cert("server")),
            "key": str(self.pki.key("server")),
            "acl": str(self.folder / "acl.toml"),
            **self.api_settings,
        }
        self.config_path.write_text(tomli_w.dumps({"worker": worker, "api": api}))

    def start(self) -> None:
        self.port = self.port or free_port()
        self.write_config()
        self.start_worker()
        self.start_api()

    def start_worker(self) -> None:
        self._spawn("worker", "alps-worker")
        self.wait_for_worker()

    def start_api(self) -> None:
        self._spawn("api", "alps-api")
        self.wait_for_api()

    def _spawn(self, service: str, script: str) -> None:
        log = open(self.folder / f"{service}.log", "ab")  # noqa: SIM115 - kept open
        self.processes[service] = subprocess.Popen(
            [console_script(script), "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()

    def wait_for_worker(self) -> None:
        client = WorkerClient(str(self.socket_path), timeout=2)
        self._wait("worker", client.ping)

    def wait_for_api(self) -> None:
        def probe() -> None:
            with self.client("user") as client:
                client.get("/list")

        self._wait("api", probe)

    def _wait(self, service: str, probe: Callable[[], object]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            process = self.processes[service]
            if process.poll() is not None:
                pytest.fail(
                    f"alps-{service} exited with {process.returncode}:\n"
                    + self.log(service)
                )
            try:
                probe()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop_service(self, service: str, signum: int = signal.SIGTERM) -> int | None:
        process = self.processes.pop(service, None)
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signum)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def stop(self) -> None:
        self.stop_service("api")
        self.stop_service("worker")

    def client(self, name: str = "user", timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            verify=client_context(self.pki, name),
            timeout=timeout,
        )

    def cli_config(self, name: str = "user") -> Path:
        """Write a CLI configuration for the identity ``name``; return its path."""
        path = self.folder / f"cli-{name}.toml"
        config = {
            "server": {"address": self.address, "ca": str(self.pki.ca_cert)},
            "client": {
                "cert": str(self.pki.cert(name)),
                "key": str(self.pki.key(name)),
            },
        }
        path.write_text(tomli_w.dumps(config))
        return path


def client_context(pki: Pki, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.cert(name)), str(pki.key(name)))
    return context


@contextlib.contextmanager
def running_server(
    folder: Path,
    pki: Pki,
    extra_users: dict[str, str] | None = None,
    api_settings: dict[str, Any] | None = None,
    run_as: dict[str, str] | None = None,
    **worker_settings: Any,
) -> Iterator[AlpsServer]:
    server = AlpsServer(
        folder=folder,
        pki=pki,
        worker_settings=worker_settings,
        extra_users=extra_users or {},
        api_settings=api_settings or {},
        run_as=run_as or {},
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


def wait_until(
    condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02
) -> Any:
    """Return the first true value of ``condition()``; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} seconds")
        time.sleep(interval)


def wait_stopped(client: httpx.Client, job_id: int, timeout: float = 10.0) -> dict:
    """Poll a job's status until it has stopped; return the status body."""

    def stopped() -> dict | None:
        body = client.get(f"/status/{job_id}").json()
        return body if body.get("jobStatus") == "stopped" else None

    return wait_until(stopped, timeout)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
