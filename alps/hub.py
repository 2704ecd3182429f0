"""The Hub: the worker's RPC object, one method per API endpoint.

Every method takes the caller's identity and role and checks them itself, so a
bug in the API cannot show or change another user's job: a user who asks for a job
that is not theirs gets the same ``JobNotFound`` as for a job that does not exist.

Locks: the table lock guards the job table and the expiry heap; each job's own
lock (a ``Condition``) guards its fields. Code that needs both takes the table lock
first.
"""

from __future__ import annotations

import heapq
import logging
import os
import shutil
import threading
import time
from typing import Any

from Pyro5.api import expose

from alps import __version__
from alps.acl import Role, normalize_identity
from alps.config import WorkerConfig
from alps.errors import AlpsError, Forbidden, InvalidRequest, JobNotFound
from alps.jobs import Job, JobStatus
from alps.limits import first_over, parse_limits
from alps.logs import event
from alps.process.cgroups import CgroupHost
from alps.process.environment import (
    Account,
    current_account,
    default_account,
    find_account,
    job_environment,
    working_folder,
)
from alps.process.jobfiles import STREAMS, JobFiles, lost_record
from alps.process.runner import Runner, SpawnError
from alps.process.supervisor import STOP_REQUESTED
from alps.process.watcher import OutputWatcher
from alps.store import JobStore
from alps.timefmt import rfc3339

logger = logging.getLogger(__name__)

MAX_JOB_ID = 2**63 - 1  # SQLite's largest integer key
# Maximum bytes one read call returns: large enough to stream fast, small enough
# that a few calls in flight keep the worker's and the API's memory low.
READ_CHUNK = 4 << 20
# Maximum number of output streams that one wait_any call may watch.
MAX_WATCHES = 10_000
# Maximum number of follow waiters whose wake epoch the Hub keeps.
MAX_WAITERS = 1_000
# How long past the stop grace a stop call waits before it reports a failure.
STOP_WAIT_MARGIN = 10.0


class Hub:
    def __init__(
        self, config: WorkerConfig, store: JobStore, cgroups: CgroupHost | None
    ) -> None:
        self._config = config
        self._store = store
        self._cgroups = cgroups
        self._jobs_dir = config.state_dir / "jobs"
        self._account = current_account()
        self._default_account = default_account(config.default_run_as)
        self._table_lock = threading.Lock()
        self._jobs: dict[int, Job] = {}
        self._by_owner: dict[str, dict[int, Job]] = {}
        self._expiry: list[tuple[float, int]] = []  # (outputExpires, job ID)
        self._prune_wake = threading.Event()
        self._closing = threading.Event()
        self._runner = Runner(on_exit=self._on_supervisor_exit)
        self._watcher = OutputWatcher()
        # The latest epoch that each follow waiter (one per API process) woke with.
        self._wake_epochs: dict[str, int] = {}
        # Jobs that the worker itself stopped because it was shutting down.
        self._shutdown_stops: set[int] = set()
        self._pruner = threading.Thread(
            target=self._prune_loop, name="alps-pruner", daemon=True
        )

    # Lifecycle -----------------------------------------------------------------

    def open(self) -> None:
        """Load the records, pick up jobs still running, and start the threads."""
        self._jobs_dir.mkdir(mode=0o700, exist_ok=True)
        for job in self._store.load_all():
            self._add(job)
        self._runner.start()
        for job in list(self._jobs.values()):
            if job.is_running:
                self._recover(job)
        self._pruner.start()

    def close(self, stop_jobs: bool) -> None:
        """Stop the threads; with ``stop_jobs``, stop running jobs and wait."""
        if stop_jobs:
            running = [job for job in list(self._jobs.values()) if job.is_running]
            self._shutdown_stops.update(job.id for job in running)
            for job in running:
                self._runner.stop(job.id)
            for job in running:
                self._wait_stopped(job)
        self._closing.set()
        self._prune_wake.set()
        self._runner.close()
        self._watcher.close()
        self._pruner.join(timeout=5)

    def running_count(self) -> int:
        return sum(1 for job in list(self._jobs.values()) if job.is_running)

    # The RPC methods -----------------------------------------------------------

    @expose
    def ping(self) -> dict[str, Any]:
        return {"version": __version__, "pid": os.getpid()}

    @expose
    def start(
        self,
        identity: str,
        role: str,
        command: object,
        request_id: str | None = None,
        limits: dict | None = None,
        run_as: str | None = None,
    ) -> dict[str, Any]:
        """Start ``command`` for ``identity``; return the new job's ID and owner.

        The job runs as ``run_as`` (the account that the ACL gives the caller),
        else as ``default_run_as``, else as the worker's own user.
        """
        owner, caller_role = _check_caller(identity, role)
        checked = self._check_command(command)
        job_limits = self._check_limits(limits, caller_role)
        account = self._account_for(run_as)
        if request_id is not None:
            earlier = self._store.find_request(request_id)
            if earlier is not None and earlier in self._jobs:
                return _start_body(self._jobs[earlier])

        start_time = time.time()
        with self._table_lock:
            # A job that runs as the worker's own user needs no switch of IDs,
            # and a worker that is not root could not make one.
            own = account.uid == self._account.uid
            run_as_name = None if own else account.name
            job_id = self._store.insert(
                checked, owner, start_time, request_id, job_limits, run_as_name
            )
            job = Job(
                id=job_id,
                command=checked,
                owner=owner,
                start_time=start_time,
                limits=job_limits,
                run_as=run_as_name,
            )
            self._add_unlocked(job)
        try:
            with job.lock:
                supervisor = self._launch(job, None if own else account)
        except (SpawnError, OSError) as error:
            logger.error(event("job start failed", id=job_id, error=error))
            self._finish(job, lost_record(f"could not start the job: {error}"))
            raise AlpsError(f"job {job_id} could not start: {error}") from None
        logger.info(event("job started", id=job_id, owner=owner, supervisor=supervisor))
        return _start_body(job)

    @expose
    def stop(self, identity: str, role: str, job_id: object) -> dict[str, Any]:
        """Stop a job and wait until it has stopped; stopping twice is fine."""
        job = self._visible_job(identity, role, job_id)
        with job.lock:
            if job.is_running and self._runner.stop(job.id):
                logger.info(event("job stop requested", id=job.id, by=identity))
        if not self._wait_stopped(job):
            raise AlpsError(
                f"job {job.id} did not stop within "
                f"{self._config.stop_grace + STOP_WAIT_MARGIN:g} seconds"
            )
        with job.lock:
            return job.view()

    @expose
    def status(self, identity: str, role: str, job_id: object) -> dict[str, Any]:
        job = self._visible_job(identity, role, job_id)
        with job.lock:
            return job.view()

    @expose
    def output(self, identity: str, role: str, job_id: object) -> dict[str, Any]:
        """Return the job's status with its stdout and stderr as raw bytes.

        A stream larger than ``output_json_max`` comes back as its last part, with
        ``stdoutOffset`` or ``stderrOffset`` telling where that part starts.
        """
        job = self._visible_job(identity, role, job_id)
        with job.lock:
            body = job.view()
        files = JobFiles(self._jobs_dir, job.id)
        for stream in ("stdout", "stderr"):
            size, offset, data = files.read_tail(stream, self._config.output_json_max)
            body[f"{stream}Size"] = size
            body[f"{stream}Bytes"] = data
            if offset:
                body[f"{stream}Offset"] = offset
        # The files may have been pruned while they were read.
        self._visible_job(identity, role, job_id)
        return body

    @expose
    def read(
        self,
        identity: str,
        role: str,
        job_id: object,
        stream: object,
        offset: object,
        length: object,
    ) -> dict[str, Any]:
        """Return a window of a job's raw stdout or stderr.

        The result holds ``size`` (the whole stream's size now), ``data`` (at most
        ``length`` bytes from ``offset``, and never more than READ_CHUNK) and the
        job's ``jobStatus`` as it was before the read, so a reader that sees
        ``stopped`` knows that no byte follows the ones it got.
        """
        job = self._visible_job(identity, role, job_id)
        if stream not in STREAMS:
            raise InvalidRequest(f"invalid stream {stream!r}: use stdout or stderr")
        start = _check_count(offset, "offset")
        count = min(_check_count(length, "limit"), READ_CHUNK)
        with job.lock:
            status = job.status.value
        size, data = JobFiles(self._jobs_dir, job.id).read_window(
            str(stream), start, count
        )
        self._visible_job(identity, role, job_id)
        return {"size": size, "data": data, "jobStatus": status}

    @expose
    def wait_any(
        self, watches: object, timeout: object, waiter: str = "", epoch: int = 0
    ) -> list[int]:
        """Wait until one of several output streams has more to read.

        Each watch is ``[identity, role, job_id, stream, offset]``. Return the
        indices of the watches that are ready, because their stream is longer
        than ``offset``, their job has stopped, or the caller may no longer see
        the job. Return ``[]`` after ``timeout`` seconds (at most 30), or once
        ``wake(waiter, E)`` has been called with an ``E`` above ``epoch``, even
        if that call came first: the caller's list of watches is out of date.
        """
        checks = self._watch_checks(watches)
        seconds = min(max(_check_number(timeout, "timeout"), 0.0), 30.0)
        deadline = time.monotonic() + seconds
        with self._watcher.changed:
            while True:
                ready = [index for index, check in enumerate(checks) if check()]
                remaining = deadline - time.monotonic()
                stale = self._wake_epochs.get(waiter, 0) > epoch
                if ready or remaining <= 0 or stale:
                    return ready
                self._watcher.changed.wait(remaining)

    @expose
    def wake(self, waiter: str = "", epoch: int = 0) -> None:
        """Mark ``waiter``'s watches before ``epoch`` as out of date, and wake it."""
        with self._watcher.changed:
            if (
                len(self._wake_epochs) >= MAX_WAITERS
                and waiter not in self._wake_epochs
            ):
                # Waiters of API processes that are gone; the oldest go first.
                del self._wake_epochs[next(iter(self._wake_epochs))]
            self._wake_epochs[waiter] = max(self._wake_epochs.get(waiter, 0), epoch)
            self._watcher.changed.notify_all()

    def _watch_checks(self, watches: object) -> list[Any]:
        if not isinstance(watches, list) or len(watches) > MAX_WATCHES:
            raise InvalidRequest(f"watches must be a list of at most {MAX_WATCHES}")
        checks = []
        for watch in watches:
            if not isinstance(watch, list) or len(watch) != 5:
                raise InvalidRequest(
                    "each watch must be [identity, role, job_id, stream, offset]"
                )
            identity, role, job_id, stream, offset = watch
            try:
                job = self._visible_job(identity, role, job_id)
            except JobNotFound:
                checks.append(lambda: True)
                continue
            if stream not in STREAMS:
                raise InvalidRequest(f"invalid stream {stream!r}: use stdout or stderr")
            position = _check_count(offset, "offset")
            files = JobFiles(self._jobs_dir, job.id)
            if job.is_running:
                self._watcher.watch(job.id, files.folder)
            checks.append(_grown_or_stopped(job, files, str(stream), position))
        return checks

    @expose
    def list(
        self, identity: str, role: str, everyone: bool = False
    ) -> list[dict[str, Any]]:
        """Return the status of the caller's jobs, oldest first.

        With ``everyone``, an admin gets every user's jobs.
        """
        owner, caller_role = _check_caller(identity, role)
        if everyone and caller_role is not Role.ADMIN:
            raise Forbidden("you are forbidden to list all jobs: not an admin")
        now = time.time()
        with self._table_lock:
            if everyone:
                jobs = list(self._jobs.values())
            else:
                jobs = list(self._by_owner.get(owner, {}).values())
        views = []
        for job in jobs:
            with job.lock:
                if not _expired(job, now):
                    views.append(job.view())
        return views

    @expose
    def take(self, identity: str, role: str, job_id: object) -> dict[str, Any]:
        """Make an admin the owner of a job."""
        new_owner, caller_role = _check_caller(identity, role)
        if caller_role is not Role.ADMIN:
            raise Forbidden("you are forbidden to take that job: not an admin")
        job = self._visible_job(identity, role, job_id)
        with self._table_lock, job.lock:
            old_owner = job.owner
            if old_owner != new_owner:
                del self._by_owner[old_owner][job.id]
                self._by_owner.setdefault(new_owner, {})[job.id] = job
                job.owner = new_owner
                self._store.save_owner(job)
        logger.info(event("job taken", id=job.id, owner=new_owner, old_owner=old_owner))
        return {"jobID": job.id, "owner": new_owner, "oldOwner": old_owner}

    # Checks --------------------------------------------------------------------

    def _check_command(self, command: object) -> str:
        if not isinstance(command, str):
            raise InvalidRequest("field 'job' must be a string")
        if not command.strip():
            raise InvalidRequest("field 'job' must not be empty")
        if "\0" in command:
            raise InvalidRequest("field 'job' must not contain a NUL character")
        try:
            size = len(command.encode())
        except UnicodeEncodeError:
            raise InvalidRequest("field 'job' is not valid Unicode text") from None
        if size > self._config.max_command_length:
            raise InvalidRequest(
                f"field 'job' is {size} bytes long; the limit is "
                f"{self._config.max_command_length} bytes"
            )
        return command

    def _account_for(self, run_as: object) -> Account:
        """Return the account a new job runs as; raise AlpsError if it cannot."""
        if run_as is None:
            return self._default_account
        name = run_as
        if not isinstance(name, str):
            raise AlpsError(f"invalid run_as account {name!r}")
        try:
            account = find_account(name)
        except KeyError:
            raise AlpsError(
                f"cannot run the job as {name!r}: no such account on the worker's host"
            ) from None
        if account.uid != self._account.uid and os.geteuid() != 0:
            raise AlpsError(
                f"cannot run the job as {name!r}: the worker does not run as root"
            )
        return account

    def _check_limits(self, data: object, role: Role) -> dict[str, Any]:
        """Return the limits a new job gets: the defaults, then what it asks for."""
        try:
            requested = parse_limits(data, "limits")
        except ValueError as error:
            raise InvalidRequest(f"field {error}") from None
        supported = self._cgroups.limits if self._cgroups else frozenset()
        unsupported = sorted(requested.names() - supported)
        if unsupported:
            raise InvalidRequest(
                f"field 'limits.{unsupported[0]}': this worker cannot apply "
                f"{unsupported[0]} limits (no cgroup controller for them)"
            )
        if role is not Role.ADMIN:
            ceiling = self._config.limits.overridden_by(self._config.max_limits)
            over = first_over(requested, ceiling)
            if over is not None:
                name, value, cap = over
                raise InvalidRequest(
                    f"field 'limits.{name}': {value} is above the maximum of {cap} "
                    f"for users"
                )
        defaults = self._config.limits.only(supported)
        return defaults.overridden_by(requested).to_dict()

    def _visible_job(self, identity: str, role: str, job_id: object) -> Job:
        """Return the job if the caller may see it; raise JobNotFound otherwise."""
        owner, caller_role = _check_caller(identity, role)
        checked_id = _check_job_id(job_id)
        job = self._jobs.get(checked_id)
        if job is None or _expired(job, time.time()):
            raise JobNotFound()
        if caller_role is not Role.ADMIN and job.owner != owner:
            raise JobNotFound()
        return job

    # Running jobs --------------------------------------------------------------

    def _launch(self, job: Job, other: Account | None) -> int:
        """Start a job's supervisor; ``other`` is the job's account if not ours."""
        account = self._account if other is None else other
        files = JobFiles(self._jobs_dir, job.id)
        files.create_folder()
        cwd = working_folder(account)
        cgroup = None
        if self._cgroups is not None:
            cgroup = self._cgroups.for_job(job.id, job.limits)
        spec = {
            "id": job.id,
            "command": job.command,
            "env": job_environment(job.id, account, cwd),
            "cwd": cwd,
            "job_dir": str(files.folder),
            "stop_grace": self._config.stop_grace,
            "cgroup": None if cgroup is None else cgroup.to_dict(),
            "user": None if other is None else other.credentials(),
            "limits": job.limits,
        }
        return self._runner.spawn(job.id, spec)

    def _recover(self, job: Job) -> None:
        """Pick up a job that a previous worker left running."""
        files = JobFiles(self._jobs_dir, job.id)
        record = files.read_exit()
        if record is None:
            pids = files.read_pids()
            if pids and self._runner.adopt(job.id, pids["pid"], pids["start"]):
                logger.info(event("job reattached", id=job.id, supervisor=pids["pid"]))
                return
            # The supervisor may have ended between the two reads.
            record = files.read_exit()
        if record is None:
            cgroup = None if self._cgroups is None else self._cgroups.for_job(job.id)
            files.kill_leftovers(cgroup)
            record = lost_record(
                "the job's supervisor was gone when the worker started"
            )
        self._finish(job, record)

    def _on_supervisor_exit(self, job_id: int) -> None:
        job = self._jobs.get(job_id)
        if job is None:
            return
        files = JobFiles(self._jobs_dir, job_id)
        record = files.read_exit()
        if record is None:
            cgroup = None if self._cgroups is None else self._cgroups.for_job(job_id)
            files.kill_leftovers(cgroup)
            record = lost_record("the job's supervisor ended without a record")
        self._finish(job, record)

    def _finish(self, job: Job, record: dict[str, Any]) -> None:
        """Record how a job ended and wake whoever waits for it."""
        reason = record.get("reason")
        if reason == STOP_REQUESTED and job.id in self._shutdown_stops:
            reason = "stopped because the worker shut down"
        with job.lock:
            if not job.is_running:
                return
            job.mark_stopped(
                exit_code=record.get("exitCode"),
                signal=record.get("signal"),
                reason=reason,
                stop_time=float(record.get("stopTime") or time.time()),
                retention=self._config.retention,
            )
            self._store.save_end(job)
            job.lock.notify_all()
        self._watcher.unwatch(job.id)
        assert job.output_expires is not None
        with self._table_lock:
            heapq.heappush(self._expiry, (job.output_expires, job.id))
        self._prune_wake.set()
        logger.info(
            event(
                "job stopped",
                id=job.id,
                exit_code=job.exit_code,
                signal=job.signal,
                reason=job.reason,
            )
        )

    def _wait_stopped(self, job: Job) -> bool:
        deadline = time.monotonic() + self._config.stop_grace + STOP_WAIT_MARGIN
        with job.lock:
            while job.is_running:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                job.lock.wait(remaining)
        return True

    # The table -----------------------------------------------------------------

    def _add(self, job: Job) -> None:
        with self._table_lock:
            self._add_unlocked(job)
            if job.status is JobStatus.STOPPED and job.output_expires is not None:
                heapq.heappush(self._expiry, (job.output_expires, job.id))

    def _add_unlocked(self, job: Job) -> None:
        self._jobs[job.id] = job
        self._by_owner.setdefault(job.owner, {})[job.id] = job

    def _prune_loop(self) -> None:
        while not self._closing.is_set():
            now = time.time()
            due = []
            with self._table_lock:
                while self._expiry and self._expiry[0][0] <= now:
                    due.append(heapq.heappop(self._expiry)[1])
                next_expiry = self._expiry[0][0] if self._expiry else None
            for job_id in due:
                self._prune(job_id)
            wait = 3600.0 if next_expiry is None else max(0.0, next_expiry - now)
            self._prune_wake.wait(min(wait, 3600.0))
            self._prune_wake.clear()

    def _prune(self, job_id: int) -> None:
        with self._table_lock:
            job = self._jobs.pop(job_id, None)
            if job is None:
                return
            del self._by_owner[job.owner][job_id]
            if not self._by_owner[job.owner]:
                del self._by_owner[job.owner]
        try:
            self._store.delete(job_id)
            shutil.rmtree(JobFiles(self._jobs_dir, job_id).folder, ignore_errors=True)
        except Exception:
            logger.exception(event("job prune failed", id=job_id))
            return
        logger.info(event("job pruned", id=job_id))


def _check_caller(identity: object, role: object) -> tuple[str, Role]:
    if not isinstance(identity, str) or not identity.strip():
        raise AlpsError("the caller's identity is missing")
    try:
        return normalize_identity(identity), Role(str(role))
    except ValueError:
        raise AlpsError(f"invalid caller role {role!r}") from None


def _check_job_id(job_id: object) -> int:
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise InvalidRequest(f"invalid job ID {job_id!r}: must be a positive integer")
    if not 0 < job_id <= MAX_JOB_ID:
        raise InvalidRequest(f"invalid job ID {job_id}: must be from 1 to {MAX_JOB_ID}")
    return job_id


def _grown_or_stopped(job: Job, files: JobFiles, stream: str, offset: int) -> Any:
    def check() -> bool:
        return not job.is_running or files.size(stream) > offset

    return check


def _check_number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"invalid {name} {value!r}: must be a number")
    return float(value)


def _check_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequest(f"invalid {name} {value!r}: must be a whole number >= 0")
    return value


def _expired(job: Job, now: float) -> bool:
    return job.output_expires is not None and now >= job.output_expires


def _start_body(job: Job) -> dict[str, Any]:
    return {"jobID": job.id, "owner": job.owner, "startTime": rfc3339(job.start_time)}
