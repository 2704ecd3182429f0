"""The ``alps-dashboard`` command line: help, options and config errors."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest
from cli_support import alps_env

from alps.cli.errors import CommandError
from alps.tui.main import add_options, run

from helpers import console_script


def run_dashboard(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [console_script("alps-dashboard"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_help_describes_keys_and_config(tmp_path: Path):
    result = run_dashboard("--help", env=alps_env(tmp_path))
    assert result.returncode == 0
    assert result.stdout.startswith("usage: alps-dashboard")
    assert "--interval SECONDS" in result.stdout
    assert "$ALPS_CONFIG" in result.stdout


def test_missing_config_is_one_line(tmp_path: Path):
    absent = tmp_path / "absent.toml"
    result = run_dashboard(env=alps_env(tmp_path, absent))
    assert result.returncode == 1
    assert result.stderr == (
        f"alps-dashboard: error: the config file {absent} does not exist; set it "
        "up with 'alps config', or run 'alps dev' to start a local server\n"
    )
    assert result.stdout == ""


def test_incomplete_config_names_setting(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text('[server]\naddress = "127.0.0.1:8443"\n')
    result = run_dashboard(env=alps_env(tmp_path, config))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "no CA certificate (set it with 'alps config ca FILE')" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_interval_is_rejected(tmp_path: Path):
    result = run_dashboard("--interval", "0", env=alps_env(tmp_path))
    assert result.returncode == 2
    assert "invalid interval '0'" in result.stderr


def test_alps_subcommand_raises_command_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("ALPS_CONFIG", str(tmp_path / "absent.toml"))
    parser = argparse.ArgumentParser()
    add_options(parser)
    args = parser.parse_args(["--interval", "2"])
    assert args.interval == 2.0
    with pytest.raises(CommandError, match="does not exist"):
        run(args)


def test_alps_dashboard_subcommand_has_help():
    result = subprocess.run(
        [console_script("alps"), "dashboard", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 0
    assert "--interval" in result.stdout
