"""Human output of the job commands: local times, status lines and the job table.

Text from the server (commands, owners, reasons) may contain control characters.
They are shown as escapes such as ``\\n`` or ``\\x1b``, so a job's command can
neither break a table row nor send escape sequences to the terminal.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from typing import Any

from alps.timefmt import parse_rfc3339

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_BINARY_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB")


def printable(text: object) -> str:
    """Return ``text`` with control and other non-printable characters escaped."""
    value = str(text)
    if value.isprintable():
        return value
    return "".join(
        char if char.isprintable() else _ESCAPES.get(char, f"\\x{ord(char):02x}")
        for char in value
    )


def local_time(stamp: object) -> str:
    """Format an RFC 3339 time stamp in the local time zone with its UTC offset.

    ``2026-12-04T15:05:01.123Z`` in Paris becomes ``2026-12-04 16:05:01 +01:00``.
    A value that does not parse is shown as it came.
    """
    try:
        moment = parse_rfc3339(str(stamp)).astimezone()
    except ValueError:
        return printable(stamp)
    return moment.strftime("%Y-%m-%d %H:%M:%S ") + _utc_offset(moment)


def _utc_offset(moment: datetime) -> str:
    offset = moment.utcoffset()
    minutes = 0 if offset is None else int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


def status_lines(job: dict[str, Any]) -> list[str]:
    """Return a job's status as aligned ``Label: value`` lines."""
    rows = [
        ("ID", job.get("jobID")),
        ("Command", job.get("job")),
        ("Owner", job.get("owner")),
        ("Runs as", job.get("runAs")),
        ("Limits", limits_text(job.get("limits"))),
        ("Status", job.get("jobStatus")),
        ("Started", local_time(job.get("startTime"))),
    ]
    if job.get("jobStatus") == "stopped":
        rows += [
            ("Stopped", local_time(job.get("stopTime"))),
            ("Exit code", job.get("exitCode")),
            ("Signal", job.get("signal")),
            ("Reason", job.get("reason")),
            ("Output until", local_time(job.get("outputExpires"))),
        ]
    shown = [(label, value) for label, value in rows if value is not None]
    width = max(len(label) for label, _ in shown) + 1
    return [f"{label + ':':<{width}} {printable(value)}" for label, value in shown]


def limits_text(limits: object) -> str | None:
    """Return a job's limits as ``memory 256 MiB, cpu 0.5, pids 100``, or None."""
    if not isinstance(limits, dict) or not limits:
        return None
    parts = []
    for name, value in limits.items():
        formatted = str(value)
        if name == "memory" and isinstance(value, int):
            formatted = binary_size(value)
        elif isinstance(value, float):
            formatted = f"{value:g}"
        parts.append(f"{name} {formatted}")
    return ", ".join(parts)


def binary_size(size: int) -> str:
    """Format a byte count with binary units: ``1610612736`` is ``1.5 GiB``."""
    value = float(size)
    unit = 0
    while value >= 1024 and unit < len(_BINARY_UNITS) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{size} bytes"
    return f"{value:.1f}".removesuffix(".0") + f" {_BINARY_UNITS[unit]}"


def job_table(
    jobs: list[dict[str, Any]], width: int | None, show_owner: bool = False
) -> list[str]:
    """Return a table of jobs with a header, each line cut to ``width`` if given.

    The command is the last column, so a cut shortens only the command.
    """
    header = ["ID", "STATUS", "EXIT", "STARTED", "COMMAND"]
    rows = [header] + [_job_row(job) for job in jobs]
    if show_owner:
        owners = ["OWNER"] + [printable(job.get("owner")) for job in jobs]
        rows = [
            [row[0], owner, *row[1:]] for row, owner in zip(rows, owners, strict=True)
        ]
    columns = len(header) + int(show_owner)
    widths = [max(len(row[column]) for row in rows) for column in range(columns - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(size) for cell, size in zip(row, widths, strict=False)]
        line = "  ".join([*cells, row[-1]])
        lines.append(_cut(line, width))
    return lines


def _job_row(job: dict[str, Any]) -> list[str]:
    exit_code = job.get("exitCode")
    return [
        printable(job.get("jobID")),
        printable(job.get("jobStatus")),
        "" if exit_code is None else printable(exit_code),
        local_time(job.get("startTime")),
        printable(job.get("job")),
    ]


def _cut(line: str, width: int | None) -> str:
    # NOTE: this counts characters, so a line with wide (East Asian) characters
    # may still wrap in the terminal.
    if width is None or len(line) <= width:
        return line
    return line[: max(width - 3, 0)] + "..."


def output_width() -> int | None:
    """Return the width to cut table lines to, or None for no limit.

    ``COLUMNS`` wins when set. Otherwise lines are cut to the terminal's width
    only when stdout is a terminal, so that a pipe or file gets whole commands.
    """
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty():
        return os.get_terminal_size(sys.stdout.fileno()).columns
    return None
