"""The Sanic application: six endpoints, each a thin call to the worker's Hub.

Every response is JSON with a ``status`` field equal to the HTTP status. Errors are
``{"status": N, "error": "message"}``, also for unknown routes, wrong methods and
failures inside ALPS, and never carry a stack trace.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from sanic import Request, Sanic
from sanic.exceptions import MethodNotAllowed, NotFound, SanicException
from sanic.handlers import ErrorHandler
from sanic.response import HTTPResponse
from sanic.response import json as json_response

from alps.acl import Acl, Role, load_acl
from alps.config import ApiConfig
from alps.errors import AlpsError, ConfigError, InvalidRequest, NotAuthorized
from alps.hub import MAX_JOB_ID
from alps.ipc import WorkerClient
from alps.logs import event
from alps.services.api import openapi
from alps.services.api.audit import AuditLog, subject_pairs
from alps.services.api.follow import FollowWaiter
from alps.services.api.identity import identity_from_peercert

logger = logging.getLogger("alps.api")

ENDPOINTS = frozenset(
    {"start", "stop", "status", "output", "list", "take", "openapi.json"}
)
# At most this many refused handshakes are logged one by one per window.
HANDSHAKE_LOG_BURST = 10
HANDSHAKE_LOG_WINDOW = 60.0
# Digits in the largest value of a job ID, an offset or a limit (2**63 - 1).
MAX_DIGITS = 19
# Threads that make blocking calls to the worker; each holds one worker connection.
WORKER_THREADS = 64


@dataclass(frozen=True)
class Caller:
    identity: str
    role: Role


class Api:
    """The state behind the endpoints: the ACL in force and the worker client."""

    def __init__(self, config: ApiConfig, acl: Acl, worker: WorkerClient) -> None:
        self.config = config
        self.acl = acl
        self.worker = worker
        self.audit = AuditLog(config.audit_log)
        self._handshake_window_start = time.monotonic()
        self._handshakes_logged = 0
        self._handshakes_unlogged = 0
        self.pool = ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="alps-rpc")
        self.waiter = FollowWaiter(worker)

    def caller(self, request: Request) -> Caller:
        """Return the authenticated caller; raise NotAuthorized (401) otherwise."""
        cached = getattr(request.ctx, "caller", None)
        if cached is not None:
            return cached
        peercert = request.transport.get_extra_info("peercert")
        identity = identity_from_peercert(peercert)
        # Known even when refused below, for the log and the audit record.
        request.ctx.identity = identity
        role = self.acl.role_of(identity)
        if role is None:
            raise NotAuthorized()
        request.ctx.caller = Caller(identity, role)
        return request.ctx.caller

    async def call_on_job(
        self, request: Request, method: Callable[..., Any], job_id: str
    ) -> Any:
        """Check the caller and the job ID in the path, then call the worker."""
        caller = self.caller(request)
        checked = parse_job_id(job_id)
        return await self.call(method, caller.identity, caller.role, checked)

    async def call(self, method: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking worker call on the thread pool, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, partial(method, *args))

    def handshake_failed(self, reason: str) -> None:
        """Audit a client that the TLS handshake turned away, and log it.

        Anyone can fail a handshake, so the log takes at most HANDSHAKE_LOG_BURST
        lines per HANDSHAKE_LOG_WINDOW seconds and then one line with the count.
        The audit log keeps every refusal.
        """
        self.audit.record("handshake", None, error=reason)
        now = time.monotonic()
        if now - self._handshake_window_start >= HANDSHAKE_LOG_WINDOW:
            if self._handshakes_unlogged:
                logger.warning(
                    event(
                        "tls handshakes failed",
                        count=self._handshakes_unlogged,
                        seconds=HANDSHAKE_LOG_WINDOW,
                    )
                )
            self._handshake_window_start = now
            self._handshakes_logged = 0
            self._handshakes_unlogged = 0
        if self._handshakes_logged < HANDSHAKE_LOG_BURST:
            self._handshakes_logged += 1
            logger.warning(event("tls handshake failed", reason=reason))
        else:
            self._handshakes_unlogged += 1

    def reload_acl(self) -> None:
        """Load the ACL file again; keep the old one if the new one is invalid."""
        try:
            acl = load_acl(self.config.acl)
        except ConfigError as error:
            logger.error(event("acl reload failed", error=str(error)))
            return
        self.acl = acl
        logger.info(event("acl reloaded", file=self.config.acl, users=len(acl.roles)))
        # Open follows check the new ACL now rather than at their next byte.
        self.waiter.wake_all()


def create_app(api: Api, name: str = "alps") -> Sanic:
    app = Sanic(name, configure_logging=False, error_handler=JsonErrorHandler(api))
    app.config.REQUEST_MAX_SIZE = api.config.max_body_size
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.NOISY_EXCEPTIONS = False
    app.ctx.api = api

    @app.post("/start")
    async def start(request: Request) -> HTTPResponse:
        caller = api.caller(request)
        command, limits = _start_request(request.body)
        run_as = api.acl.run_as_of(caller.identity)
        result = await api.call(
            api.worker.start, caller.identity, caller.role, command, limits, run_as
        )
        request.ctx.job_id = result["jobID"]
        return reply(request, result)

    @app.post("/stop/<job_id:str>")
    async def stop(request: Request, job_id: str) -> HTTPResponse:
        result = await api.call_on_job(request, api.worker.stop, job_id)
        return reply(request, result)

    @app.get("/status/<job_id:str>")
    async def status(request: Request, job_id: str) -> HTTPResponse:
        result = await api.call_on_job(request, api.worker.status, job_id)
        return reply(request, result)

    @app.get("/output/<job_id:str>")
    async def output(request: Request, job_id: str) -> HTTPResponse:
        result = await api.call_on_job(request, api.worker.output, job_id)
        for stream in ("stdoutBytes", "stderrBytes"):
            result[stream] = base64.b64encode(result[stream]).decode("ascii")
        return reply(request, result)

    @app.get("/list")
    async def list_jobs(request: Request) -> HTTPResponse:
        caller = api.caller(request)
        everyone = query_flag(request, "all")
        jobs = await api.call(api.worker.list, caller.identity, caller.role, everyone)
        return reply(request, {"jobs": jobs})

    @app.post("/take/<job_id:str>")
    async def take(request: Request, job_id: str) -> HTTPResponse:
        result = await api.call_on_job(request, api.worker.take, job_id)
        return reply(request, result)

    @app.get("/openapi.json")
    async def openapi_document(request: Request) -> HTTPResponse:
        # The document is served as it is, with no status field added, so that
        # it stays a valid OpenAPI document.
        api.caller(request)
        log_request(request, 200)
        return json_response(openapi.document())

    from alps.services.api import streams

    streams.register(app, api)

    @app.before_server_start
    async def watch_hangup(app: Sanic) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, api.reload_acl)

    @app.on_request
    async def note_start(request: Request) -> None:
        request.ctx.started = time.perf_counter()

    return app


def reply(
    request: Request,
    body: dict[str, Any],
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTTPResponse:
    """Return ``body`` with its ``status`` field, and log the request."""
    log_request(request, status)
    return json_response({"status": status, **body}, status=status, headers=headers)


def log_request(request: Request | None, status: int) -> None:
    """Log and audit one request: who asked for what, the status and the time."""
    if request is None:
        logger.info(event("request", status=status))
        return
    started = getattr(request.ctx, "started", None)
    elapsed = None if started is None else (time.perf_counter() - started) * 1000
    identity = getattr(request.ctx, "identity", None)
    logger.info(
        event(
            "request",
            method=request.method,
            path=request.path,
            identity=identity,
            status=status,
            ms=None if elapsed is None else f"{elapsed:.1f}",
        )
    )
    details: dict[str, Any] = {}
    if status == NotAuthorized.status:
        details["subject"] = subject_pairs(_peercert(request))
    request.app.ctx.api.audit.record(
        _action(request), status, identity, _path_job_id(request), **details
    )


def _peercert(request: Request) -> dict[str, Any] | None:
    return request.transport.get_extra_info("peercert")


def _action(request: Request) -> str:
    """Name what a request asks for: the endpoint, such as ``stop`` or ``output``."""
    parts = request.path.strip("/").split("/")
    if parts[0] not in ENDPOINTS:
        return "unknown"
    if parts[0] == "output" and len(parts) == 3:
        return f"output.{parts[2][:20]}"
    return parts[0]


def _path_job_id(request: Request) -> int | None:
    started = getattr(request.ctx, "job_id", None)
    if started is not None:
        return started
    text = request.match_info.get("job_id") if request.route else None
    value = whole_number(text) if isinstance(text, str) else None
    return value if value is not None and 0 < value <= MAX_JOB_ID else None


def whole_number(text: str) -> int | None:
    """Return the value of ASCII digits, or None for anything else or too long.

    Python refuses to convert more than 4300 digits, and no ID, offset or limit
    here has more than MAX_DIGITS, so longer text is refused before ``int``.
    """
    if not text or len(text) > MAX_DIGITS or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def query_flag(request: Request, name: str) -> bool:
    """Return a true/false query parameter; raise InvalidRequest naming a bad one."""
    values = request.args.getlist(name)
    if not values:
        return False
    text = values[-1].lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise InvalidRequest(f"invalid {name} {text[:20]!r}: use true or false")


def parse_job_id(text: str) -> int:
    """Return the job ID in a path; raise InvalidRequest naming the bad value."""
    shown = text if len(text) <= 40 else text[:40] + "..."
    if not text.isascii() or not text.isdigit():
        raise InvalidRequest(f"invalid job ID {shown!r}: must be a positive integer")
    job_id = whole_number(text)
    if job_id is None or not 0 < job_id <= MAX_JOB_ID:
        raise InvalidRequest(
            f"invalid job ID {shown!r}: must be from 1 to {MAX_JOB_ID}"
        )
    return job_id


def _start_request(body: bytes) -> tuple[str, dict[str, Any] | None]:
    """Return the command and the optional limits of a start request body."""
    if not body:
        raise InvalidRequest('request body is empty: send {"job": "COMMAND"}')
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidRequest(f"request body is not valid JSON: {error}") from None
    except RecursionError:
        raise InvalidRequest(
            "request body is not valid JSON: nested too deep"
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest('request body must be a JSON object: {"job": "COMMAND"}')
    unknown = sorted(set(data) - {"job", "limits"})
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r} in the request body")
    if "job" not in data:
        raise InvalidRequest("field 'job' is missing")
    command = data["job"]
    if not isinstance(command, str):
        raise InvalidRequest("field 'job' must be a string")
    if not command.strip():
        raise InvalidRequest("field 'job' must not be empty")
    try:
        # JSON may hold lone UTF-16 surrogates ("\ud800"), which no UTF-8 text can.
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise InvalidRequest(
            "request body contains a lone surrogate (\\ud800-\\udfff), which is not "
            "valid Unicode text"
        ) from None
    limits = data.get("limits")
    if limits is not None and not isinstance(limits, dict):
        raise InvalidRequest(
            "field 'limits' must be an object with memory, cpu or pids"
        )
    return command, limits


class JsonErrorHandler(ErrorHandler):
    """Turn every exception into the ``{"status", "error"}`` body."""

    def __init__(self, api: Api) -> None:
        super().__init__()
        self.api = api

    def default(self, request: Request, exception: Exception) -> HTTPResponse:
        status, message = self._describe(request, exception)
        headers = exception.headers if isinstance(exception, AlpsError) else None
        return reply(request, {"error": message}, status=status, headers=headers)

    def _describe(self, request: Request, exception: Exception) -> tuple[int, str]:
        if isinstance(exception, AlpsError):
            return exception.status, exception.message
        if isinstance(exception, NotFound | MethodNotAllowed) and request is not None:
            # Unknown routes are for authorized callers only, like everything else.
            try:
                self.api.caller(request)
            except NotAuthorized as refusal:
                return refusal.status, refusal.message
            if isinstance(exception, MethodNotAllowed):
                return 405, f"method {request.method} is not allowed on {request.path}"
            return 404, f"no such endpoint: {request.method} {request.path}"
        if isinstance(exception, SanicException) and exception.status_code < 500:
            return exception.status_code, _sanic_message(exception)
        # The type only: an exception's text may quote the request, command too.
        logger.error(
            event(
                "request failed",
                path=request.path if request else None,
                error=type(exception).__name__,
            ),
            exc_info=exception,
        )
        return 500, "internal error: the request could not be completed"


def _sanic_message(exception: SanicException) -> str:
    text = str(exception.args[0]) if exception.args else ""
    return (
        text.rstrip(".").lower()
        if text
        else f"request failed ({exception.status_code})"
    )
