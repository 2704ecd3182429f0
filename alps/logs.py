"""Logging for the services: one line per event, an event name then key=value pairs.

``event("job started", id=12, owner="a@example.com")`` gives
``job started id=12 owner=a@example.com``. Values with spaces, quotes or ``=`` are
quoted as JSON strings, so every line splits back into its pairs.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_PLAIN = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@.-_/:+,"
)


def event(name: str, **fields: object) -> str:
    """Format one log line: the event name, then each field as key=value."""
    parts = [name]
    for key, value in fields.items():
        if value is None:
            continue
        text = str(value)
        if not text or not set(text) <= _PLAIN:
            # JSON string escapes also cover newlines, which could forge a line.
            text = json.dumps(text, ensure_ascii=False)
        parts.append(f"{key}={text}")
    return " ".join(parts)


class _UtcFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


def setup(service: str, level: int = logging.INFO) -> None:
    """Send log lines to stderr as ``TIME LEVEL service: event key=value ...``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _UtcFormatter(f"%(asctime)s %(levelname)s {service}: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
