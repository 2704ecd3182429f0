"""``alps-worker --config FILE``: serve the Hub with Pyro5 on a private Unix socket."""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import Pyro5.api
from Pyro5 import config as pyro_config

from alps import __version__, logs, memory
from alps.config import WorkerConfig, load_server_config
from alps.errors import ConfigError
from alps.hub import Hub
from alps.ipc import HUB_OBJECT_ID, configure_pyro
from alps.logs import event
from alps.process import cgroups
from alps.process.environment import UNPRIVILEGED, default_account
from alps.services.worker.socket import SocketError, prepare_socket, socket_mode
from alps.store import JobStore

logger = logging.getLogger("alps.worker")

# Each Pyro5 client connection holds one server thread for as long as it is open.
RPC_THREADS = 256


class StartupError(Exception):
    """The worker cannot start; the message says why and what to do."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="alps-worker",
        description="Run ALPS jobs and serve the worker's Hub on a Unix socket.",
    )
    parser.add_argument(
        "--config", required=True, metavar="FILE", help="server configuration (TOML)"
    )
    parser.add_argument("--version", action="version", version=__version__)
    args = parser.parse_args(argv)
    logs.setup("alps-worker")
    memory.bound_heaps()
    try:
        config = load_server_config(args.config).worker
        return serve(config)
    except (ConfigError, StartupError, SocketError) as error:
        logger.error(event("worker failed to start", error=str(error)))
        print(f"alps-worker: {error}", file=sys.stderr)
        return 2


def serve(config: WorkerConfig) -> int:
    # Everything the worker creates is private unless it says otherwise.
    os.umask(0o077)
    _check_default_account(config)
    lock = _lock_state_dir(config.state_dir)
    prepare_socket(config.socket, config.socket_group)
    host = _find_cgroups(config)

    store = JobStore(config.state_dir / "jobs.sqlite3")
    hub = Hub(config, store, host)
    hub.open()

    configure_pyro()
    pyro_config.THREADPOOL_SIZE = RPC_THREADS
    daemon = _bind_daemon(config)
    daemon.register(hub, HUB_OBJECT_ID)

    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, frame: stopping.set())
    loop = threading.Thread(target=daemon.requestLoop, name="alps-rpc", daemon=True)
    loop.start()
    logger.info(
        event(
            "worker ready",
            socket=config.socket,
            pid=os.getpid(),
            running=hub.running_count(),
            cgroups="none" if host is None else f"v{host.version}",
        )
    )

    stopping.wait()
    logger.info(event("worker stopping"))
    daemon.shutdown()
    stop_jobs = not config.keep_jobs_on_exit
    hub.close(stop_jobs=stop_jobs)
    store.close()
    if host is not None and (stop_jobs or hub.running_count() == 0):
        host.remove_bases()
    config.socket.unlink(missing_ok=True)
    os.close(lock)
    running = 0 if stop_jobs else hub.running_count()
    logger.info(event("worker stopped", jobs_left_running=running))
    return 0


def _check_default_account(config: WorkerConfig) -> None:
    name = config.default_run_as
    try:
        account = default_account(name)
    except KeyError:
        shown = name or UNPRIVILEGED
        raise StartupError(
            f"default_run_as {shown!r} is not an account on this host; "
            f"set [worker] default_run_as to an account that exists"
        ) from None
    if account.uid != os.geteuid() and os.geteuid() != 0:
        raise StartupError(f"default_run_as {name!r} needs the worker to run as root")
    if name is None and os.geteuid() == 0:
        logger.info(
            event(
                "jobs run as an unprivileged account",
                account=account.name,
                hint="set [worker] default_run_as or an ACL run_as to choose one",
            )
        )


def _lock_state_dir(state_dir: Path) -> int:
    """Create the state folder and lock it, so that one worker at a time uses it."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = state_dir.stat().st_mode & 0o777
    if mode & 0o022:
        raise StartupError(
            f"state folder {state_dir} is writable by others (mode {mode:o}); "
            f"make it private with: chmod 700 {state_dir}"
        )
    fd = os.open(
        state_dir / "worker.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartupError(
            f"another worker is using the state folder {state_dir}"
        ) from None
    return fd


def _find_cgroups(config: WorkerConfig) -> cgroups.CgroupHost | None:
    if config.cgroups != "off" and os.geteuid() != 0:
        host, reason = None, "the worker does not run as root"
    else:
        host, reason = cgroups.detect(str(config.state_dir), config.cgroups)
    if host is None:
        logger.warning(
            event(
                "cgroups unavailable",
                reason=reason,
                fallback="jobs are stopped through their process group",
            )
        )
    unapplied = sorted(config.limits.names() - (host.limits if host else set()))
    if unapplied:
        logger.warning(
            event("job limits not applied", limits=",".join(unapplied), reason=reason)
        )
    return host


def _bind_daemon(config: WorkerConfig) -> Pyro5.api.Daemon:
    # The socket file takes its mode from the umask at bind time, so no client
    # can connect during a window before a chmod.
    previous = os.umask(0o777 & ~socket_mode(config.socket_group))
    try:
        daemon = Pyro5.api.Daemon(unixsocket=str(config.socket))
    finally:
        os.umask(previous)
    if config.socket_group is not None:
        import grp

        os.chown(config.socket, -1, grp.getgrnam(config.socket_group).gr_gid)
    return daemon


if __name__ == "__main__":
    sys.exit(main())
