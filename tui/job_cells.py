"""The text of a job's table cells, from its status object as the API sends it."""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

from rich.text import Text

from alps.cli.display import printable
from alps.timefmt import parse_rfc3339

# Column key and heading, in display order.
COLUMNS = (
    ("id", "ID"),
    ("owner", "Owner"),
    ("command", "Command"),
    ("state", "State"),
    ("started", "Started"),
    ("duration", "Duration"),
    ("exit", "Exit"),
)
MAX_COMMAND_CHARS = 40
STATE_STYLES = {"running": "bold green", "stopped": "dim"}


class JobFormatter:
    """A formatter of a job's status object into the text of its table cells.

    ``zone`` is the time zone of the Started column; None is the local one.
    """

    def __init__(self, zone: tzinfo | None = None) -> None:
        self.zone = zone

    def cells(self, job: dict[str, Any], now: float) -> dict[str, str | Text]:
        """Return the text of every column, by column key, at Unix time ``now``."""
        state = printable(job.get("jobStatus", "unknown"))
        return {
            "id": printable(job.get("jobID")),
            "owner": printable(job.get("owner", "")),
            "command": shorten(printable(job.get("job", "")), MAX_COMMAND_CHARS),
            "state": Text(state, style=STATE_STYLES.get(state, "")),
            "started": self.started(job, now),
            "duration": self.duration(job, now),
            "exit": exit_text(job),
        }

    def started(self, job: dict[str, Any], now: float) -> str:
        """Return the start time: a clock time today, else date and time."""
        start = _parse_time(job.get("startTime"))
        if start is None:
            return ""
        local = start.astimezone(self.zone)
        today = datetime.fromtimestamp(now, local.tzinfo).date()
        if local.date() == today:
            return local.strftime("%H:%M:%S")
        return local.strftime("%Y-%m-%d %H:%M")

    def duration(self, job: dict[str, Any], now: float) -> str:
        """Return how long the job ran, up to ``now`` while it is running."""
        start = _parse_time(job.get("startTime"))
        if start is None:
            return ""
        stop = _parse_time(job.get("stopTime"))
        end = stop.timestamp() if stop is not None else now
        return format_elapsed(end - start.timestamp())


def exit_text(job: dict[str, Any]) -> str:
    """Return the exit code, with the signal's name for a job ended by one."""
    code = job.get("exitCode")
    if code is None:
        return ""
    signal_name = job.get("signal")
    if signal_name:
        return f"{printable(code)} ({printable(signal_name)})"
    return printable(code)


def format_elapsed(seconds: float) -> str:
    """Format a duration compactly with its two largest units: ``4m 05s``."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def shorten(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters, ending it with an ellipsis if cut."""
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def matches(job: dict[str, Any], query: str) -> bool:
    """Tell whether a job's ID, owner, command or state contains ``query``.

    The comparison ignores case; an empty query matches every job.
    """
    needle = query.strip().lower()
    if not needle:
        return True
    fields = (job.get("jobID"), job.get("owner"), job.get("job"), job.get("jobStatus"))
    return any(needle in str(value).lower() for value in fields if value is not None)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_rfc3339(value)
    except ValueError:
        return None
