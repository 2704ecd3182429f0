"""Time stamps as the API writes them: RFC 3339, UTC, millisecond precision, ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(timestamp: float) -> str:
    """Format a Unix time stamp as ``2026-12-04T15:50:01.123Z``."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_rfc3339(text: str) -> datetime:
    """Parse a time stamp written by ``rfc3339`` into an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
