"""The dashboard's parts that need no server: cells, history, identity, settings."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import tomli_w

from alps import certs
from alps.tui.history import RunningHistory
from alps.tui.identity import certificate_identity
from alps.tui.job_cells import (
    JobFormatter,
    exit_text,
    format_elapsed,
    matches,
    shorten,
)
from alps.tui.settings import SettingsError, load_settings

from helpers import Pki

NOON = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC).timestamp()
RUNNING = {
    "jobID": 7,
    "job": "sleep 100",
    "owner": "user@example.com",
    "startTime": "2026-12-04T11:58:55.500Z",
    "jobStatus": "running",
}
STOPPED = RUNNING | {
    "jobStatus": "stopped",
    "stopTime": "2026-12-04T11:59:05.900Z",
    "exitCode": 143,
    "signal": "SIGTERM",
}

# Cells --------------------------------------------------------------------------------


def test_cells_of_running_job() -> None:
    cells = JobFormatter(ZoneInfo("Europe/Paris")).cells(RUNNING, NOON)
    assert cells["id"] == "7"
    assert cells["owner"] == "user@example.com"
    assert cells["command"] == "sleep 100"
    assert str(cells["state"]) == "running"
    assert cells["started"] == "12:58:55"
    assert cells["duration"] == "1m 04s"
    assert cells["exit"] == ""


def test_cells_of_stopped_job() -> None:
    cells = JobFormatter(ZoneInfo("UTC")).cells(STOPPED, NOON + 3600)
    assert str(cells["state"]) == "stopped"
    assert cells["duration"] == "10s"
    assert cells["exit"] == "143 (SIGTERM)"


def test_started_shows_date_on_other_day() -> None:
    formatter = JobFormatter(ZoneInfo("America/New_York"))
    next_day = NOON + 86400
    assert formatter.started(RUNNING, next_day) == "2026-12-04 06:58"


def test_cells_escape_control_characters() -> None:
    job = RUNNING | {"job": "printf 'a\nb'\x1b[2J"}
    command = JobFormatter().cells(job, NOON)["command"]
    assert "\n" not in command
    assert "\x1b" not in command


def test_cells_of_job_without_times() -> None:
    cells = JobFormatter().cells({"jobID": 1, "jobStatus": "running"}, NOON)
    assert cells["started"] == ""
    assert cells["duration"] == ""


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-3, "0s"),
        (0.9, "0s"),
        (59, "59s"),
        (61, "1m 01s"),
        (3600 + 120, "1h 02m"),
        (86400 * 2 + 3600 * 5, "2d 05h"),
    ],
)
def test_format_elapsed(seconds: float, text: str) -> None:
    assert format_elapsed(seconds) == text


def test_exit_text_without_signal() -> None:
    assert exit_text({"exitCode": 3}) == "3"


def test_exit_text_of_running_job() -> None:
    assert exit_text(RUNNING) == ""


def test_shorten_marks_cut() -> None:
    assert shorten("abcdef", 4) == "abc…"
    assert shorten("abcd", 4) == "abcd"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", True),
        ("SLEEP", True),
        ("7", True),
        ("example.com", True),
        ("running", True),
        ("stopped", False),
        ("admin", False),
    ],
)
def test_matches(query: str, expected: bool) -> None:
    assert matches(RUNNING, query) is expected


# History ------------------------------------------------------------------------------


def test_history_keeps_maximum_of_bucket() -> None:
    history = RunningHistory(bucket_seconds=5, buckets=3)
    history.record(2, 100.0)
    history.record(5, 101.0)
    history.record(1, 104.0)
    assert history.values(104.0) == [0.0, 0.0, 5.0]


def test_history_window_slides() -> None:
    history = RunningHistory(bucket_seconds=5, buckets=3)
    for step, count in enumerate([1, 2, 3, 4]):
        history.record(count, 100.0 + 5 * step)
    assert history.values(115.0) == [2.0, 3.0, 4.0]
    assert history.peak() == 4


def test_history_missing_buckets_are_zero() -> None:
    history = RunningHistory(bucket_seconds=5, buckets=4)
    history.record(3, 100.0)
    history.record(1, 115.0)
    assert history.values(115.0) == [3.0, 0.0, 0.0, 1.0]


def test_history_rejects_zero_bucket() -> None:
    with pytest.raises(ValueError, match="bucket_seconds"):
        RunningHistory(bucket_seconds=0)


# Identity -----------------------------------------------------------------------------


def test_identity_from_san_email(pki: Pki) -> None:
    assert certificate_identity(pki.cert("admin")) == "admin@example.com"


@pytest.mark.parametrize(
    ("options", "identity"),
    [
        ({"email": "Mixed@Example.COM"}, "mixed@example.com"),
        (
            {"subject_email": "subject@example.com", "common_name": "x"},
            "subject@example.com",
        ),
        ({"common_name": "Robot One"}, "robot one"),
        ({"email": "a@example.com", "extra_emails": ("b@example.com",)}, None),
    ],
)
def test_identity_follows_api_rule(
    tmp_path: Path, pki: Pki, options: dict, identity: str | None
) -> None:
    path = tmp_path / "client.crt"
    certs.issue_client(pki.ca, **options).write(path, tmp_path / "client.key")
    assert certificate_identity(path) == identity


def test_identity_of_unreadable_file(tmp_path: Path) -> None:
    assert certificate_identity(tmp_path / "missing.crt") is None


# Settings -----------------------------------------------------------------------------


def write_config(path: Path, server: dict, client: dict) -> Path:
    path.write_text(tomli_w.dumps({"server": server, "client": client}))
    return path


def test_settings_from_complete_config(tmp_path: Path, pki: Pki) -> None:
    path = write_config(
        tmp_path / "config.toml",
        {"address": "127.0.0.1:8443", "ca": str(pki.ca_cert)},
        {"cert": str(pki.cert("user")), "key": str(pki.key("user"))},
    )
    settings = load_settings(path)
    assert settings.address == "127.0.0.1:8443"
    assert settings.cert == pki.cert("user")


def test_settings_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(tmp_path / "absent.toml")
    assert "does not exist" in caught.value.message
    assert "alps dev" in caught.value.message


def test_settings_incomplete_names_commands(tmp_path: Path, pki: Pki) -> None:
    path = write_config(tmp_path / "config.toml", {"ca": str(pki.ca_cert)}, {})
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    message = caught.value.message
    assert "\n" not in message
    assert "no server address (set it with 'alps config host HOST:PORT')" in message
    assert (
        "no client certificate and client key "
        "(set them with 'alps config user CERT KEY')" in message
    )


def test_settings_unreadable_key(tmp_path: Path, pki: Pki) -> None:
    path = write_config(
        tmp_path / "config.toml",
        {"address": "127.0.0.1:8443", "ca": str(pki.ca_cert)},
        {"cert": str(pki.cert("user")), "key": str(tmp_path / "gone.key")},
    )
    with pytest.raises(SettingsError, match="cannot read client key"):
        load_settings(path)


def test_settings_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[server\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(path)
