"""Per-job resource limits: memory, CPU and process count, applied by cgroups.

In the server configuration and in a start request, ``memory`` is a size in bytes
(``268435456``) or with a binary unit (``256M``, ``1.5G``), ``cpu`` is a number of
CPUs (``0.5``), and ``pids`` is the largest number of processes and threads.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, fields, replace
from typing import Any

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_UNIT_BYTES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

MIN_MEMORY = 1 << 20  # below a MiB even the job's shell cannot start
MIN_CPU = 0.01  # the kernel's smallest CFS quota is 1 ms in a 100 ms period
MAX_PIDS = 4_194_304  # the kernel's largest pid_max


@dataclass(frozen=True)
class Limits:
    memory: int | None = None
    cpu: float | None = None
    pids: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            item.name: getattr(self, item.name)
            for item in fields(self)
            if getattr(self, item.name) is not None
        }

    def __bool__(self) -> bool:
        return bool(self.to_dict())

    def names(self) -> set[str]:
        return set(self.to_dict())

    def overridden_by(self, other: Limits) -> Limits:
        """Return these limits with each value that ``other`` sets replaced."""
        return replace(self, **other.to_dict())

    def only(self, names: set[str] | frozenset[str]) -> Limits:
        return Limits(
            **{name: value for name, value in self.to_dict().items() if name in names}
        )


def parse_size(value: object) -> int:
    """Return a size in bytes from ``268435456``, ``"256M"`` or ``"1.5G"``."""
    if isinstance(value, bool):
        raise ValueError(f"invalid size {_shown(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and (match := _SIZE.match(value)):
        return int(float(match.group(1)) * _UNIT_BYTES[match.group(2).upper()])
    raise ValueError(
        f"invalid size {_shown(value)}: use bytes or a number with K, M, G or T, "
        "like 512M"
    )


def parse_limits(data: object, where: str) -> Limits:
    """Check a table of limits; ValueError messages start with ``'where.NAME'``."""
    if data is None:
        return Limits()
    if not isinstance(data, dict):
        raise ValueError(f"'{where}' must be an object with memory, cpu or pids")
    unknown = sorted(set(data) - {"memory", "cpu", "pids"})
    if unknown:
        raise ValueError(
            f"'{where}.{unknown[0]}' is not a limit: use memory, cpu or pids"
        )
    memory = cpu = pids = None
    if "memory" in data:
        memory = _checked_memory(data["memory"], f"'{where}.memory'")
    if "cpu" in data:
        cpu = _checked_cpu(data["cpu"], f"'{where}.cpu'")
    if "pids" in data:
        pids = _checked_pids(data["pids"], f"'{where}.pids'")
    return Limits(memory=memory, cpu=cpu, pids=pids)


def _checked_memory(value: object, name: str) -> int:
    try:
        size = parse_size(value)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None
    if size < MIN_MEMORY:
        raise ValueError(f"{name}: {_shown(value)} is below the minimum of 1M")
    if size > host_memory():
        raise ValueError(
            f"{name}: {_shown(value)} is more than this host's memory "
            f"({host_memory() >> 20} MiB)"
        )
    return size


def host_memory() -> int:
    """Return the host's physical memory in bytes."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _shown(value: object) -> str:
    """Show a value as JSON writes it (null, true, "text", 12), as a request did."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _checked_cpu(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(
            f"{name}: invalid CPU count {_shown(value)}: use a number like 0.5"
        )
    cpus = os.cpu_count() or 1
    if not MIN_CPU <= value <= cpus:
        raise ValueError(
            f"{name}: {_shown(value)} is out of range: use {MIN_CPU} to {cpus} CPUs"
        )
    return float(value)


def _checked_pids(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"{name}: invalid process count {_shown(value)}: use an integer"
        )
    if not 1 <= value <= MAX_PIDS:
        raise ValueError(
            f"{name}: {_shown(value)} is out of range: use 1 to {MAX_PIDS}"
        )
    return value


def first_over(requested: Limits, ceiling: Limits) -> tuple[str, Any, Any] | None:
    """Return (name, requested value, ceiling) of the first limit over the ceiling."""
    for name, value in requested.to_dict().items():
        cap = getattr(ceiling, name)
        if cap is not None and value > cap:
            return name, value, cap
    return None
