"""The CLI's config file and the ``alps config`` commands.

The file is ``$ALPS_CONFIG`` if set, else ``$XDG_CONFIG_HOME/alps/config.toml``
(``~/.config/alps/config.toml``)::

    [server]
    address = "127.0.0.1:8443"
    ca = "/path/ca.crt"

    [client]
    cert = "/path/user.crt"
    key = "/path/user.key"

The commands store paths as absolute paths. A relative path written by hand is
taken relative to the file's folder. An unknown key is an error, so that a
misspelt setting never passes silently.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from pathlib import Path
from typing import NamedTuple

from alps.cli.errors import CommandError

# Each setting: its table, its key, and the command that sets it.
SETTINGS = {
    "address": ("server", "address", "alps config host HOST:PORT"),
    "ca": ("server", "ca", "alps config ca FILE"),
    "cert": ("client", "cert", "alps config user CERT KEY"),
    "key": ("client", "key", "alps config user CERT KEY"),
}
DESCRIPTIONS = {
    "address": "server address",
    "ca": "CA certificate",
    "cert": "client certificate",
    "key": "client key",
}


class CliConfig(NamedTuple):
    path: Path
    exists: bool = False
    address: str | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def missing(self) -> list[str]:
        """Return the names of the settings that are not set, in file order."""
        return [name for name in SETTINGS if getattr(self, name) is None]


def config_path() -> Path:
    """Return the config file's path from ``ALPS_CONFIG`` or the XDG folders."""
    explicit = os.environ.get("ALPS_CONFIG")
    if explicit:
        return Path(explicit).expanduser().absolute()
    return default_config_path()


def default_config_path() -> Path:
    """Return ``$XDG_CONFIG_HOME/alps/config.toml``, ignoring ``ALPS_CONFIG``."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    # The XDG base directory spec says to ignore a relative value.
    folder = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    return folder / "alps" / "config.toml"


def load_config(path: Path | None = None) -> CliConfig:
    """Read the config file; a file that does not exist gives an empty config."""
    path = path or config_path()
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        return CliConfig(path=path)
    except OSError as error:
        raise CommandError(
            f"cannot read config file {path}: {error.strerror}"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise CommandError(
            f"config file {path} is not valid TOML: {error}; fix it, or delete it "
            "and set it up again with 'alps config'"
        ) from None
    return _parse(path, data)


def _parse(path: Path, data: dict) -> CliConfig:
    _check_keys(path, "", data, {"server", "client"})
    values: dict[str, str] = {}
    for name, (table, key, _) in SETTINGS.items():
        section = data.get(table, {})
        if not isinstance(section, dict):
            raise CommandError(f"config file {path}: [{table}] must be a table")
        _check_keys(path, f"{table}.", section, _keys_of(table))
        value = section.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise CommandError(
                f"config file {path}: {table}.{key} must be a non-empty string, "
                f"got {value!r}"
            )
        values[name] = value
    return CliConfig(
        path=path,
        exists=True,
        address=values.get("address"),
        **{
            name: path.parent / Path(values[name]).expanduser()
            for name in ("ca", "cert", "key")
            if name in values
        },
    )


def _keys_of(table: str) -> set[str]:
    return {key for section, key, _ in SETTINGS.values() if section == table}


def _check_keys(path: Path, prefix: str, table: dict, known: set[str]) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise CommandError(
            f"config file {path}: unknown setting {prefix}{unknown[0]}; "
            f"known settings are: {', '.join(prefix + key for key in sorted(known))}"
        )


def save_config(config: CliConfig) -> None:
    """Write ``config`` to its file, private (mode 0600) from the start."""
    import tomli_w

    data: dict[str, dict[str, str]] = {}
    for name, (table, key, _) in SETTINGS.items():
        value = getattr(config, name)
        if value is not None:
            data.setdefault(table, {})[key] = str(value)
    try:
        write_private(config.path, tomli_w.dumps(data).encode())
    except OSError as error:
        raise CommandError(
            f"cannot write config file {config.path}: {error.strerror}"
        ) from None


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in a file created with mode 0600.

    The folder is created with mode 0700 if it does not exist. The file is
    written under a temporary name and renamed, so a reader sees the old file or
    the new one, never a part.
    """
    import tempfile

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkstemp creates the file with mode 0600.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def require_complete(config: CliConfig) -> None:
    """Raise CommandError naming each missing setting and the command that sets it."""
    missing = config.missing()
    if not missing:
        return
    lines = [f"the config file {config.path} is incomplete:"]
    commands_seen = set()
    for name in missing:
        command = SETTINGS[name][2]
        if command in commands_seen:
            continue
        commands_seen.add(command)
        lines.append(f"  no {DESCRIPTIONS[name]}; set it with: {command}")
    if not config.exists:
        lines.append("  or run 'alps dev' to start a local server and set all of them")
    raise CommandError("\n".join(lines))


# The config commands -----------------------------------------------------------


def run_host(args: argparse.Namespace) -> int:
    from alps.client import parse_address

    try:
        parse_address(args.address)
    except ValueError as error:
        raise CommandError(str(error)) from None
    config = load_config()
    save_config(config._replace(address=args.address))
    print(f"Server address set to {args.address} in {config.path}")
    return 0


def run_ca(args: argparse.Namespace) -> int:
    from alps.client import ClientError, check_ca_file

    path = Path(args.file).expanduser().absolute()
    try:
        check_ca_file(path)
    except ClientError as error:
        raise CommandError(error.message) from None
    config = load_config()
    save_config(config._replace(ca=path))
    print(f"CA certificate set to {path} in {config.path}")
    return 0


def run_user(args: argparse.Namespace) -> int:
    from alps.client import ClientError, check_client_files

    cert = Path(args.cert).expanduser().absolute()
    key = Path(args.key).expanduser().absolute()
    try:
        check_client_files(cert, key)
    except ClientError as error:
        raise CommandError(error.message) from None
    config = load_config()
    save_config(config._replace(cert=cert, key=key))
    print(f"Client certificate set to {cert} and key to {key} in {config.path}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    config = load_config()
    state = "" if config.exists else " (does not exist yet)"
    print(f"Config file: {config.path}{state}")
    width = max(len(f"{table}.{key}") for table, key, _ in SETTINGS.values())
    for name, (table, key, command) in SETTINGS.items():
        value = getattr(config, name)
        shown = str(value) if value is not None else f"not set; set it with: {command}"
        print(f"  {table}.{key}".ljust(width + 2) + f" = {shown}")
    return 0
