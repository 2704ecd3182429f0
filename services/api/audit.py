"""The audit log: one JSON object a line for every request and every refusal.

Each record has ``time`` (RFC 3339, UTC), ``identity`` (or null when the
certificate gave none), ``action``, ``jobID`` (or null) and ``result`` (the HTTP
status, or null for a refused TLS handshake). A refusal also carries the
certificate's ``subject`` as a list of ``[attribute, value]`` pairs, or the
handshake's ``error``. Records never hold a command, job output or key material.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import IO, Any

from alps.timefmt import rfc3339


class AuditLog:
    def __init__(self, path: Path | None) -> None:
        self._file: IO[str] | None = None
        if path is not None:
            # Created private by its mode at open, never loosened by the umask.
            fd = os.open(
                path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            self._file = os.fdopen(fd, "a", buffering=1, encoding="utf-8")

    def record(
        self,
        action: str,
        status: int | None,
        identity: str | None = None,
        job_id: int | None = None,
        **details: Any,
    ) -> None:
        if self._file is None:
            return
        entry = {
            "time": rfc3339(time.time()),
            "identity": identity,
            "action": action,
            "jobID": job_id,
            "result": status,
            **details,
        }
        self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def subject_pairs(peercert: dict[str, Any] | None) -> list[list[str]]:
    """Return a certificate's subject as ``[attribute, value]`` pairs."""
    if not peercert:
        return []
    return [
        [key, value]
        for relative_name in peercert.get("subject", ())
        for key, value in relative_name
    ]
