"""Job records on disk, in one SQLite file under the worker's state folder.

SQLite gives what the records need without a hand-written format: each write is
atomic, a job costs one insert at start and one update at stop (never a rewrite of
the whole state), and ``AUTOINCREMENT`` never hands out an ID again, not even after
the job was pruned or the worker restarted. The write-ahead log with
``synchronous=NORMAL`` keeps every committed record when the worker is killed; only
a power loss may drop the last few commits.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from alps.jobs import Job, JobStatus

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    command TEXT NOT NULL,
    owner TEXT NOT NULL,
    start_time REAL NOT NULL,
    status TEXT NOT NULL,
    stop_time REAL,
    output_expires REAL,
    exit_code INTEGER,
    signal TEXT,
    reason TEXT,
    request_id TEXT,
    limits TEXT,
    run_as TEXT
);
CREATE INDEX IF NOT EXISTS jobs_request_id ON jobs (request_id)
    WHERE request_id IS NOT NULL;
"""

_COLUMNS = (
    "id, command, owner, start_time, status, stop_time, output_expires,"
    " exit_code, signal, reason, limits, run_as"
)


class JobStore:
    """The jobs table. Safe to call from many threads: one connection, one lock."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        # Files written before these columns existed.
        for column in ("limits", "run_as"):
            if column not in columns:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} TEXT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def load_all(self) -> list[Job]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs ORDER BY id"
            ).fetchall()
        return [_job_from_row(row) for row in rows]

    def insert(
        self,
        command: str,
        owner: str,
        start_time: float,
        request_id: str | None,
        limits: dict[str, Any],
        run_as: str | None,
    ) -> int:
        """Store a new running job and return its ID."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO jobs"
                " (command, owner, start_time, status, request_id, limits, run_as)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    command,
                    owner,
                    start_time,
                    JobStatus.RUNNING.value,
                    request_id,
                    json.dumps(limits) if limits else None,
                    run_as,
                ),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def find_request(self, request_id: str) -> int | None:
        """Return the ID of the job started by ``request_id``, if there is one."""
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM jobs WHERE request_id = ?", (request_id,)
            ).fetchone()
        return None if row is None else int(row[0])

    def save_end(self, job: Job) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status = ?, stop_time = ?, output_expires = ?,"
                " exit_code = ?, signal = ?, reason = ? WHERE id = ?",
                (
                    job.status.value,
                    job.stop_time,
                    job.output_expires,
                    job.exit_code,
                    job.signal,
                    job.reason,
                    job.id,
                ),
            )

    def save_owner(self, job: Job) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET owner = ? WHERE id = ?", (job.owner, job.id)
            )

    def delete(self, job_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))


def _job_from_row(row: tuple) -> Job:
    return Job(
        id=row[0],
        command=row[1],
        owner=row[2],
        start_time=row[3],
        status=JobStatus(row[4]),
        stop_time=row[5],
        output_expires=row[6],
        exit_code=row[7],
        signal=row[8],
        reason=row[9],
        limits=json.loads(row[10]) if row[10] else {},
        run_as=row[11],
    )
