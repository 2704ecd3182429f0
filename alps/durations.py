"""Durations as the configuration files write them: ``90``, ``"90s"``, ``"10m"``.

This module imports almost nothing, because the ``alps`` command needs it and
must start quickly.
"""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> float:
    """Return a duration in seconds from ``90``, ``"90s"``, ``"10m"``, ``"1h"``.

    Raises ValueError with a message that names the value.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(
            f"invalid duration {value!r}: use seconds or a value such as 90s, 10m, 1h"
        )
    if seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must not be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """Describe a duration in words, such as ``1 hour`` or ``90 seconds``."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}" + ("" if count == 1 else "s")
    count = round(seconds)
    return f"{count} second" + ("" if count == 1 else "s")
