"""The dashboard's connection settings, read from the ``alps`` command's config file.

The dashboard reads the same file as the CLI (``$ALPS_CONFIG``, else
``$XDG_CONFIG_HOME/alps/config.toml``) with the CLI's own loader, so both always
talk to the same server as the same identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alps.cli.config import DESCRIPTIONS, SETTINGS, CliConfig, load_config
from alps.cli.errors import CommandError
from alps.client import READ_TIMEOUT, ClientError
from alps.tui.api import DashboardClient


class SettingsError(Exception):
    """A missing, incomplete or unusable config file, with a one-line message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Settings:
    """The server address and the files that identify the caller to it."""

    address: str
    ca: Path
    cert: Path
    key: Path

    def client(self, read_timeout: float = READ_TIMEOUT) -> DashboardClient:
        """Open a client; raise ClientError if the files cannot be used."""
        return DashboardClient(
            self.address, self.ca, self.cert, self.key, read_timeout=read_timeout
        )


def load_settings(path: Path | None = None) -> Settings:
    """Read the CLI config file and check that its files can be used.

    Raise SettingsError with a one-line message naming what is missing or wrong.
    """
    try:
        config = load_config(path)
    except CommandError as error:
        raise SettingsError(error.message) from None
    settings = _complete_settings(config)
    try:
        settings.client().close()
    except ClientError as error:
        raise SettingsError(error.message) from None
    return settings


def _complete_settings(config: CliConfig) -> Settings:
    if not config.exists:
        raise SettingsError(
            f"the config file {config.path} does not exist; set it up with "
            "'alps config', or run 'alps dev' to start a local server"
        )
    missing = config.missing()
    if missing:
        raise SettingsError(
            f"the config file {config.path} is incomplete: {_missing_text(missing)}"
        )
    assert config.address and config.ca and config.cert and config.key
    return Settings(config.address, config.ca, config.cert, config.key)


def _missing_text(missing: list[str]) -> str:
    """Describe missing settings, grouped by the command that sets them."""
    by_command: dict[str, list[str]] = {}
    for name in missing:
        by_command.setdefault(SETTINGS[name][2], []).append(DESCRIPTIONS[name])
    parts = []
    for command, descriptions in by_command.items():
        pronoun = "it" if len(descriptions) == 1 else "them"
        parts.append(
            f"no {' and '.join(descriptions)} (set {pronoun} with '{command}')"
        )
    return ", ".join(parts)
