"""Jobs: the record of one command that ALPS ran, and its status in API terms."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from alps.timefmt import rfc3339


class JobStatus(StrEnum):
    RUNNING = "running"  # the job's shell has not exited, or its leftovers still run
    STOPPED = "stopped"  # everything the job ran has ended and its output is complete


@dataclass
class Job:
    """One job's record. Its fields change only while ``lock`` is held."""

    id: int
    command: str
    owner: str
    start_time: float
    status: JobStatus = JobStatus.RUNNING
    stop_time: float | None = None
    output_expires: float | None = None
    exit_code: int | None = None
    signal: str | None = None
    # Why the job ended, when it did not end on its own: a stop request, a limit,
    # a full disk, or a supervisor lost while the worker was down.
    reason: str | None = None
    # The limits applied to the job, as in a start request (memory in bytes).
    limits: dict[str, Any] = field(default_factory=dict)
    # The account the job runs as, when it is not the worker's own.
    run_as: str | None = None
    # Notified whenever ``status`` changes, so that a stop can wait for the end.
    lock: threading.Condition = field(
        default_factory=threading.Condition, repr=False, compare=False
    )

    @property
    def is_running(self) -> bool:
        return self.status is JobStatus.RUNNING

    def mark_stopped(
        self,
        exit_code: int | None,
        signal: str | None,
        reason: str | None,
        stop_time: float,
        retention: float,
    ) -> None:
        """Record the job's end; its output expires ``retention`` seconds later."""
        self.status = JobStatus.STOPPED
        self.exit_code = exit_code
        self.signal = signal
        self.reason = reason
        self.stop_time = stop_time
        self.output_expires = stop_time + retention

    def view(self) -> dict[str, Any]:
        """Return the job's status object, with the API's field names."""
        body: dict[str, Any] = {
            "jobID": self.id,
            "job": self.command,
            "owner": self.owner,
            "startTime": rfc3339(self.start_time),
            "jobStatus": self.status.value,
        }
        if self.limits:
            body["limits"] = self.limits
        if self.run_as is not None:
            body["runAs"] = self.run_as
        if self.status is JobStatus.STOPPED:
            assert self.stop_time is not None and self.output_expires is not None
            body["stopTime"] = rfc3339(self.stop_time)
            body["outputExpires"] = rfc3339(self.output_expires)
            body["exitCode"] = self.exit_code
            if self.signal is not None:
                body["signal"] = self.signal
            if self.reason is not None:
                body["reason"] = self.reason
        return body
