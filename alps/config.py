"""The server configuration file, read by both ``alps-worker`` and ``alps-api``.

Relative paths in the file are relative to the file's own folder. Durations are a
number of seconds or a string such as ``90s``, ``10m`` or ``1h``. An unknown key is
an error, so that a misspelt setting never passes silently.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alps.durations import parse_duration
from alps.errors import ConfigError
from alps.limits import Limits, parse_limits
from alps.process.cgroups import MODES as CGROUP_MODES

# Without a pids limit, one fork bomb in one job would stop every job on the host.
DEFAULT_LIMITS = Limits(pids=4096)
NO_LIMITS = Limits()


@dataclass(frozen=True)
class WorkerConfig:
    socket: Path
    state_dir: Path
    retention: float = 3600.0
    stop_grace: float = 10.0
    # Group allowed to connect to the socket (mode 0660); None keeps it 0600.
    socket_group: str | None = None
    # Whether running jobs keep running when the worker exits, to be picked up
    # again by the next worker on the same state folder.
    keep_jobs_on_exit: bool = True
    # Largest stream, in bytes, that the JSON output call returns whole; past it
    # the call returns the stream's last part.
    output_json_max: int = 16 * 1024 * 1024
    # Maximum length of a command, in bytes of UTF-8.
    max_command_length: int = 64 * 1024
    # The account that jobs run as when the ACL names none for their owner; None
    # runs them as the worker's own user.
    default_run_as: str | None = None
    # Which cgroup interface jobs use: "auto", "v1", "v2" or "off".
    cgroups: str = "auto"
    # Limits that every job gets unless its start request sets its own.
    limits: Limits = DEFAULT_LIMITS
    # The highest limits a user may request; unset ones default to ``limits``.
    # Admins may request more.
    max_limits: Limits = NO_LIMITS


@dataclass(frozen=True)
class ApiConfig:
    host: str
    port: int
    ca: Path
    cert: Path
    key: Path
    acl: Path
    audit_log: Path | None = None
    # Largest request body accepted, in bytes; larger ones get 413.
    max_body_size: int = 1024 * 1024
    # Maximum time a request may take to complete, in seconds. A stop completes
    # once the job has ended, so this must exceed the worker's stop grace.
    response_timeout: float = 60.0


@dataclass(frozen=True)
class ServerConfig:
    path: Path
    worker: WorkerConfig
    api: ApiConfig | None


class _Section:
    """Typed reads from one table of the file, with errors naming file and key."""

    def __init__(self, path: Path, name: str, table: object) -> None:
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
        self.path = path
        self.name = name
        self.table: dict[str, Any] = table
        self.used: set[str] = set()

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: [{self.name}] {key}: {problem}")

    def get(self, key: str, kind: type, default: Any = None, required: bool = False):
        self.used.add(key)
        if key not in self.table:
            if required:
                raise self.fail(key, "missing")
            return default
        value = self.table[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(key, f"expected {kind.__name__}, got {value!r}")
        return value

    def path_value(self, key: str, required: bool = True) -> Path | None:
        text = self.get(key, str, required=required)
        if text is None:
            return None
        if not text:
            raise self.fail(key, "must not be empty")
        return (self.path.parent / Path(text).expanduser()).resolve()

    def duration(self, key: str, default: float) -> float:
        self.used.add(key)
        if key not in self.table:
            return default
        try:
            return parse_duration(self.table[key])
        except ValueError as error:
            raise self.fail(key, str(error)) from None

    def limits(self, key: str, default: Limits) -> Limits:
        table = self.get(key, dict)
        if table is None:
            return default
        try:
            return default.overridden_by(parse_limits(table, key))
        except ValueError as error:
            raise ConfigError(f"{self.path}: [{self.name}] {error}") from None

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            raise self.fail(key, f"invalid value {value!r}: use one of {choices}")
        return value

    def size(self, key: str, default: int) -> int:
        value = self.get(key, int, default)
        if value <= 0:
            raise self.fail(key, f"must be a positive number of bytes, got {value}")
        return int(value)

    def check_unknown(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.fail(unknown[0], "unknown setting")


def parse_listen(text: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (or ``[v6]:PORT``) and check the port's range."""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"invalid address {text!r}: expected HOST:PORT")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"invalid address {text!r}: port must be 0-65535")
    return host, port


def load_server_config(path: str | Path, need_api: bool = False) -> ServerConfig:
    """Load and check the server configuration at ``path``."""
    config_path = Path(path).expanduser().resolve()
    try:
        with config_path.open("rb") as file:
            data = tomllib.load(file)
    except OSError as error:
        raise ConfigError(f"cannot read {config_path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{config_path}: invalid TOML: {error}") from None

    unknown = sorted(set(data) - {"worker", "api"})
    if unknown:
        raise ConfigError(f"{config_path}: unknown section [{unknown[0]}]")
    if "worker" not in data:
        raise ConfigError(f"{config_path}: missing section [worker]")

    worker = _load_worker(_Section(config_path, "worker", data["worker"]))
    api = None
    if "api" in data:
        api = _load_api(_Section(config_path, "api", data["api"]))
        if api.response_timeout <= worker.stop_grace + 1:
            raise ConfigError(
                f"{config_path}: [api] response_timeout: {api.response_timeout:g}s "
                f"must be longer than [worker] stop_grace ({worker.stop_grace:g}s) "
                f"plus a second, because a stop answers once the job has ended"
            )
    elif need_api:
        raise ConfigError(f"{config_path}: missing section [api]")
    return ServerConfig(path=config_path, worker=worker, api=api)


def _load_worker(section: _Section) -> WorkerConfig:
    socket = section.path_value("socket")
    state_dir = section.path_value("state_dir")
    assert socket is not None and state_dir is not None
    config = WorkerConfig(
        socket=socket,
        state_dir=state_dir,
        retention=section.duration("retention", WorkerConfig.retention),
        stop_grace=section.duration("stop_grace", WorkerConfig.stop_grace),
        socket_group=section.get("socket_group", str),
        keep_jobs_on_exit=section.get(
            "keep_jobs_on_exit", bool, WorkerConfig.keep_jobs_on_exit
        ),
        output_json_max=section.size("output_json_max", WorkerConfig.output_json_max),
        max_command_length=section.size(
            "max_command_length", WorkerConfig.max_command_length
        ),
        default_run_as=section.get("default_run_as", str),
        cgroups=section.choice("cgroups", CGROUP_MODES, WorkerConfig.cgroups),
        limits=section.limits("limits", WorkerConfig.limits),
        max_limits=section.limits("max_limits", WorkerConfig.max_limits),
    )
    section.check_unknown()
    # A Unix socket path is limited to 107 bytes by the kernel's sockaddr_un.
    if len(str(socket).encode()) > 107:
        raise section.fail("socket", f"path {str(socket)!r} is longer than 107 bytes")
    return config


def _load_api(section: _Section) -> ApiConfig:
    listen = section.get("listen", str, "127.0.0.1:8443")
    try:
        host, port = parse_listen(listen)
    except ValueError as error:
        raise section.fail("listen", str(error)) from None
    paths = {key: section.path_value(key) for key in ("ca", "cert", "key", "acl")}
    config = ApiConfig(
        host=host,
        port=port,
        ca=paths["ca"],  # type: ignore[arg-type]
        cert=paths["cert"],  # type: ignore[arg-type]
        key=paths["key"],  # type: ignore[arg-type]
        acl=paths["acl"],  # type: ignore[arg-type]
        audit_log=section.path_value("audit_log", required=False),
        max_body_size=section.size("max_body_size", ApiConfig.max_body_size),
        response_timeout=section.duration(
            "response_timeout", ApiConfig.response_timeout
        ),
    )
    section.check_unknown()
    return config
