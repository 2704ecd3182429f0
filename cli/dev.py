"""``alps dev``: a worker and an API on loopback, with throwaway certificates.

The folder (``$XDG_STATE_HOME/alps/dev`` by default) contains a CA, a server
certificate, certificates for one user and one admin, the ACL, the server config,
and a CLI config for each identity. A rerun reuses the certificates while they
are current, and the worker's state folder, so earlier jobs are still listed.

The worker and the API run as two child processes that log to this terminal.
Ctrl-C or SIGTERM stops both (SIGTERM, then SIGKILL after a timeout) and exits
0. If either child exits on its own, the other is stopped and ``alps dev``
exits 1.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from alps import certs
from alps.cli.config import (
    CliConfig,
    config_path,
    default_config_path,
    load_config,
    save_config,
    write_private,
)
from alps.cli.errors import CommandError
from alps.config import load_server_config
from alps.durations import parse_duration
from alps.errors import ConfigError

HOST = "127.0.0.1"
USER = "user@example.com"
ADMIN = "admin@example.com"
READY_TIMEOUT = 30.0
POLL_INTERVAL = 0.1
API_STOP_TIMEOUT = 15.0
# The worker stops running jobs on exit, each within its stop grace (10 seconds
# by default), so it may take a while longer than the API.
WORKER_STOP_TIMEOUT = 30.0


class StopRequested(BaseException):
    """SIGINT or SIGTERM arrived; a BaseException so no ``except Exception`` eats it."""


@dataclass(frozen=True)
class DevFolder:
    """The paths that ``alps dev`` writes under its folder."""

    root: Path

    def cert(self, name: str) -> Path:
        return self.root / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.root / f"{name}.key"

    @property
    def server_config(self) -> Path:
        return self.root / "server.toml"

    @property
    def socket(self) -> Path:
        return self.root / "run" / "worker.sock"

    def cli_config(self, name: str) -> Path:
        return self.root / f"{name}.toml"


@dataclass
class Child:
    """A service that ``alps dev`` started, with the timeout for stopping it."""

    name: str
    process: subprocess.Popen
    stop_timeout: float


def run_dev(args: argparse.Namespace) -> int:
    try:
        parse_duration(args.retention)
    except ValueError as error:
        raise CommandError(f"--retention: {error}") from None
    folder = DevFolder(_dev_root(args.dir))
    _make_private_folder(folder.root)
    port = args.port or _free_port()
    _check_port_free(port)

    _check_account(args.run_as)
    _write_server_files(folder, port, args.retention, args.run_as)
    made_new = _ensure_certificates(folder)
    address = f"{HOST}:{port}"
    for name in ("user", "admin"):
        save_config(_cli_config(folder, name, address, folder.cli_config(name)))
    identity = _use_dev_user(folder, address)

    run = DevRun(folder, port, made_new, identity)
    return run.serve()


# Files ---------------------------------------------------------------------------


def _dev_root(text: str | None) -> Path:
    if text:
        return Path(text).expanduser().absolute()
    base = os.environ.get("XDG_STATE_HOME", "")
    # The XDG base directory spec says to ignore a relative value.
    state = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return state / "alps" / "dev"


def _make_private_folder(path: Path) -> None:
    """Create the dev folder with mode 0700, or check that an existing one is safe.

    The folder contains private keys and the server's config, so a folder that
    other users may write to, where they could replace those files, is rejected.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as error:
        raise CommandError(
            f"cannot create the dev folder {path}: {error.strerror}; "
            "choose another with --dir"
        ) from None
    if mode & 0o022:
        raise CommandError(
            f"the dev folder {path} is writable by other users (mode {mode:o}); "
            f"make it private with 'chmod 700 {_quote(path)}' or choose another "
            "with --dir"
        )


def _ensure_certificates(folder: DevFolder) -> bool:
    """Make the CA and the certificates that are missing or expiring.

    Return True when anything was made. When the CA is new, every certificate
    is made again, because the old ones were signed by the old CA.
    """
    ca = _load_current(folder, "ca", issuer=None)
    made_ca = ca is None
    if ca is None:
        ca = certs.make_ca("ALPS dev CA")
        ca.write(folder.cert("ca"), folder.key("ca"))
    made_any = made_ca
    leaves = {
        "server": lambda: certs.issue_server(ca, [HOST, "localhost"]),
        "user": lambda: certs.issue_client(ca, USER),
        "admin": lambda: certs.issue_client(ca, ADMIN),
    }
    for name, issue in leaves.items():
        if made_ca or _load_current(folder, name, issuer=ca) is None:
            issue().write(folder.cert(name), folder.key(name))
            made_any = True
    return made_any


def _load_current(
    folder: DevFolder, name: str, issuer: certs.Issued | None
) -> certs.Issued | None:
    """Return the certificate ``name`` if it loads, is current, and fits.

    It fits when its key is the key beside it and, for a leaf, when ``issuer``
    signed it.
    """
    try:
        issued = certs.load(folder.cert(name), folder.key(name))
    except (OSError, ValueError, TypeError):
        return None
    if not certs.is_current(issued.cert):
        return None
    if issued.cert.public_key() != issued.key.public_key():
        return None
    if issuer is not None:
        try:
            issued.cert.verify_directly_issued_by(issuer.cert)
        except Exception:  # cryptography raises several types for a bad signature
            return None
    return issued


def _check_account(name: str | None) -> None:
    """Check that jobs can run as ``name``: it exists, and alps dev runs as root."""
    if name is None:
        return
    import pwd

    try:
        account = pwd.getpwnam(name)
    except KeyError:
        raise CommandError(f"--run-as: no account {name!r} on this host") from None
    if account.pw_uid != os.geteuid() and os.geteuid() != 0:
        raise CommandError(
            f"--run-as {name}: running jobs as another account needs root"
        )


def _write_server_files(
    folder: DevFolder, port: int, retention: str, run_as: str | None
) -> None:
    acl = {"users": {USER: {"role": "user"}, ADMIN: {"role": "admin"}}}
    write_private(folder.root / "acl.toml", tomli_w.dumps(acl).encode())

    # Relative paths are relative to server.toml, so the folder may be moved.
    worker: dict[str, object] = {
        "socket": "run/worker.sock",
        "state_dir": "state",
        "retention": retention,
        # Stopping alps dev stops its jobs too, so none outlives it.
        "keep_jobs_on_exit": False,
    }
    if run_as is not None:
        worker["default_run_as"] = run_as
    server = {
        "worker": worker,
        "api": {
            "listen": f"{HOST}:{port}",
            "ca": "ca.crt",
            "cert": "server.crt",
            "key": "server.key",
            "acl": "acl.toml",
            "audit_log": "audit.jsonl",
        },
    }
    write_private(folder.server_config, tomli_w.dumps(server).encode())
    (folder.root / "run").mkdir(mode=0o700, exist_ok=True)
    try:
        load_server_config(folder.server_config, need_api=True)
    except ConfigError as error:
        raise CommandError(f"{error}; choose a shorter folder with --dir") from None


def _cli_config(folder: DevFolder, name: str, address: str, path: Path) -> CliConfig:
    return CliConfig(
        path=path,
        address=address,
        ca=folder.cert("ca"),
        cert=folder.cert(name),
        key=folder.key(name),
    )


def _use_dev_user(folder: DevFolder, address: str) -> list[str]:
    """Point the default CLI config at the dev user, unless ``ALPS_CONFIG`` is set.

    Return the summary lines that say how to use the dev user. A previous
    config with other settings is kept beside the new one with the suffix
    ``.bak``.
    """
    user_config = f"export ALPS_CONFIG={_quote(folder.cli_config('user'))}"
    if os.environ.get("ALPS_CONFIG"):
        return [
            f"{USER}, after: {user_config}",
            f"(ALPS_CONFIG is set, so {config_path()} is left as it was)",
        ]
    path = default_config_path()
    wanted = _cli_config(folder, "user", address, path)
    lines = [f"{USER}, written to the CLI config {path}"]
    if path.exists():
        try:
            previous = load_config(path)
        except CommandError:
            previous = None
        if previous is None or _settings(previous) != _settings(wanted):
            backup = path.with_name(path.name + ".bak")
            write_private(backup, path.read_bytes())
            lines.append(f"(its previous settings are saved in {backup})")
    save_config(wanted)
    return lines


def _settings(config: CliConfig) -> tuple[object, ...]:
    return (config.address, config.ca, config.cert, config.key)


def _quote(path: Path) -> str:
    return shlex.quote(str(path))


# Ports ---------------------------------------------------------------------------


def _free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on at this moment."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _check_port_free(port: int) -> None:
    if _port_in_use(port):
        raise CommandError(_port_in_use_message(port))


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # The API's server sets SO_REUSEADDR too, so a port left in TIME_WAIT
        # by an earlier run counts as free, as it is for the API.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _port_in_use_message(port: int) -> str:
    return (
        f"port {port} on {HOST} is in use, perhaps by another alps dev; "
        "choose another with --port PORT, or use --port 0 for a free one"
    )


# Running the services ------------------------------------------------------------


@dataclass
class DevRun:
    """The worker and the API of one ``alps dev`` run, from start to stop."""

    folder: DevFolder
    port: int
    made_new: bool
    identity: list[str]
    children: list[Child] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def serve(self) -> int:
        """Start both services, wait for a signal, and stop them; return 0."""
        previous = _catch_stop_signals()
        try:
            self.children.append(_spawn("worker", self.folder, WORKER_STOP_TIMEOUT))
            self.children.append(_spawn("API", self.folder, API_STOP_TIMEOUT))
            self.wait_for_worker()
            self.wait_for_api()
            self.print_summary()
            self.watch()
        except StopRequested:
            print("Stopping the API and the worker.", flush=True)
        finally:
            # A second signal must not cut the shutdown short.
            for signum in previous:
                signal.signal(signum, signal.SIG_IGN)
            self.stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return 0

    def wait_for_worker(self) -> None:
        from alps.errors import AlpsError
        from alps.ipc import WorkerClient

        # The client logs a warning each time the worker becomes unreachable,
        # which is expected until the worker has bound its socket.
        logging.getLogger("alps.ipc").setLevel(logging.ERROR)
        worker = WorkerClient(str(self.folder.socket), timeout=2.0)
        self.wait_until_serving("worker", worker.ping, (AlpsError,))

    def wait_for_api(self) -> None:
        from alps.client import ApiClient, ClientError

        client = ApiClient(
            self.address,
            self.folder.cert("ca"),
            self.folder.cert("user"),
            self.folder.key("user"),
            connect_timeout=2.0,
            read_timeout=5.0,
        )

        def probe() -> None:
            with client:
                client.list()

        self.wait_until_serving("API", probe, (ClientError,))

    def wait_until_serving(
        self,
        name: str,
        probe: Callable[[], object],
        errors: tuple[type[Exception], ...],
    ) -> None:
        """Call ``probe`` until it succeeds; fail if a child exits or time runs out."""
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            self.check_children(starting=True)
            try:
                probe()
                return
            except errors as error:
                if time.monotonic() > deadline:
                    raise CommandError(
                        f"the {name} did not start serving within "
                        f"{READY_TIMEOUT:g} seconds; the last attempt failed with: "
                        f"{error}"
                    ) from None
            time.sleep(POLL_INTERVAL)

    def watch(self) -> None:
        """Wait until a signal arrives, or raise when a child exits on its own."""
        while True:
            self.check_children(starting=False)
            time.sleep(POLL_INTERVAL)

    def check_children(self, starting: bool) -> None:
        for child in self.children:
            code = child.process.poll()
            if code is None:
                continue
            when = "before it started serving" if starting else "unexpectedly"
            message = f"the {child.name} ended {when}: {_describe_exit(code)}"
            if child.name == "API" and starting and _port_in_use(self.port):
                message += f"; {_port_in_use_message(self.port)}"
            else:
                message += "; see its log above"
            others = [other.name for other in self.children if other is not child]
            if others:
                message += f". Stopped the {' and the '.join(others)}."
            raise CommandError(message)

    def stop_all(self) -> None:
        """Stop the children in the reverse order of their start: API, then worker."""
        for child in reversed(self.children):
            _stop(child)

    def print_summary(self) -> None:
        certificates = "new certificates" if self.made_new else "reused certificates"
        admin_config = _quote(self.folder.cli_config("admin"))
        lines = [
            "",
            "ALPS dev server is running.",
            f"  API:      https://{self.address}",
            f"  Folder:   {self.folder.root} ({certificates})",
            f"  Identity: {self.identity[0]}",
            *(f"            {line}" for line in self.identity[1:]),
            f"  Admin:    export ALPS_CONFIG={admin_config}",
            "  Try:      alps start 'echo hello'",
            "",
            "Press Ctrl-C to stop.",
        ]
        print("\n".join(lines), flush=True)


def _describe_exit(code: int) -> str:
    """Describe a Popen return code: negative numbers are signals."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


def _catch_stop_signals() -> dict[int, Any]:
    """Make SIGINT and SIGTERM raise StopRequested; return the old handlers."""

    def request_stop(signum: int, frame: object) -> None:
        raise StopRequested()

    return {
        signum: signal.signal(signum, request_stop)
        for signum in (signal.SIGINT, signal.SIGTERM)
    }


def _spawn(name: str, folder: DevFolder, stop_timeout: float) -> Child:
    module = "alps.services.worker" if name == "worker" else "alps.services.api"
    # -I keeps the working folder off the import path: in a source checkout its
    # alps/ folder would hide the installed package, which holds alps.services.
    command = [
        sys.executable,
        "-I",
        "-m",
        module,
        "--config",
        str(folder.server_config),
    ]
    # The children get a session of their own, so a Ctrl-C in the terminal
    # reaches only alps dev, which then stops the API before the worker.
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    return Child(name, process, stop_timeout)


def _die_with_parent() -> None:
    """Ask the kernel to send SIGTERM to this child when alps dev dies.

    This covers a SIGKILL of alps dev, which leaves it no chance to stop its
    children. It runs between fork and exec, which is safe here because alps
    dev starts no threads.
    """
    import ctypes

    pr_set_pdeathsig = 1  # from <linux/prctl.h>
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _stop(child: Child) -> None:
    """Send SIGTERM, wait, and send SIGKILL if the child is still there."""
    process = child.process
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=child.stop_timeout)
    except subprocess.TimeoutExpired:
        print(
            f"alps dev: the {child.name} (PID {process.pid}) did not stop within "
            f"{child.stop_timeout:g} seconds of SIGTERM; sending SIGKILL",
            file=sys.stderr,
        )
        process.kill()
        process.wait()
