"""Raw output: ``GET /output/<id>/stdout`` and ``/stderr``, streamed in chunks.

A window of the stream is chosen with ``?offset=N&limit=M`` or a ``Range:
bytes=`` header (one range). The body is sent chunk by chunk as the worker reads
it, with the next chunk already on its way while one is sent, so neither the
worker nor the API ever holds more than a few chunks of a stream.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any

from sanic import Request, Sanic
from sanic.response import HTTPResponse

from alps.errors import AlpsError, InvalidRequest, RangeNotSatisfiable
from alps.hub import READ_CHUNK
from alps.logs import event
from alps.services.api.app import (
    Api,
    Caller,
    log_request,
    parse_job_id,
    query_flag,
    whole_number,
)

logger = logging.getLogger("alps.api")

MAX_OFFSET = 2**63 - 1
# One range of ASCII digits, at most 19 each, so that every value fits in 63 bits.
_RANGE = re.compile(r"^bytes=([0-9]{0,19})-([0-9]{0,19})$")


@dataclass(frozen=True)
class Window:
    start: int
    end: int  # one past the last byte
    partial: bool  # answer 206 with Content-Range


def register(app: Sanic, api: Api) -> None:
    @app.get("/output/<job_id:str>/<stream:str>")
    async def raw_output(
        request: Request, job_id: str, stream: str
    ) -> HTTPResponse | None:
        caller = api.caller(request)
        checked = parse_job_id(job_id)
        if stream not in ("stdout", "stderr"):
            raise InvalidRequest(
                f"invalid stream {stream[:40]!r}: use stdout or stderr"
            )
        offset, limit = _query_window(request)
        range_header = request.headers.get("range")
        if range_header is not None and (offset or limit is not None):
            raise InvalidRequest("use either offset and limit or a Range header")
        if query_flag(request, "follow"):
            if range_header is not None or limit is not None:
                raise InvalidRequest(
                    "follow=true takes an offset but no limit or Range"
                )
            await _follow(request, api, caller, checked, stream, offset)
            return None

        first = await api.call(
            api.worker.read, caller.identity, caller.role, checked, stream, 0, 0
        )
        size = first["size"]
        if range_header is not None:
            window = _parse_range(range_header, size)
        else:
            start = min(offset, size)
            end = size if limit is None else min(size, start + limit)
            window = Window(start=start, end=end, partial=False)
        job_status = first["jobStatus"]
        await _send(request, api, caller, checked, stream, window, size, job_status)
        return None


async def _send(
    request: Request,
    api: Api,
    caller: Caller,
    job_id: int,
    stream: str,
    window: Window,
    size: int,
    job_status: str,
) -> None:
    headers = {
        "accept-ranges": "bytes",
        "alps-stream-size": str(size),
        "alps-job-status": job_status,
        "content-length": str(window.end - window.start),
    }
    status = 200
    if window.partial:
        status = 206
        headers["content-range"] = f"bytes {window.start}-{window.end - 1}/{size}"
    response = await request.respond(
        status=status, headers=headers, content_type="application/octet-stream"
    )
    log_request(request, status)

    def fetch(position: int) -> asyncio.Future[Any]:
        length = min(READ_CHUNK, window.end - position)
        return asyncio.ensure_future(
            api.call(
                api.worker.read,
                caller.identity,
                caller.role,
                job_id,
                stream,
                position,
                length,
            )
        )

    position = window.start
    pending = fetch(position) if position < window.end else None
    try:
        while pending is not None:
            data = (await pending)["data"]
            if not data:
                break
            position += len(data)
            pending = fetch(position) if position < window.end else None
            await response.send(data)
        await response.eof()
    except AlpsError as error:
        # The status line is gone already; cutting the connection short tells the
        # client, through the Content-Length, that the body is incomplete.
        logger.warning(event("stream cut", path=request.path, error=error.message))
        request.transport.close()
    finally:
        if pending is not None:
            pending.cancel()


async def _follow(
    request: Request, api: Api, caller: Caller, job_id: int, stream: str, offset: int
) -> None:
    """Send the stream from ``offset``, then new bytes as they come, until the end.

    The response is chunked and ends once the job has stopped and every byte is
    sent. While nothing comes, the response timer is restarted three times per
    ``response_timeout`` without sending a byte, so a quiet job keeps its follower.
    """
    first = await api.call(
        api.worker.read, caller.identity, caller.role, job_id, stream, 0, 0
    )
    response = await request.respond(
        status=200,
        headers={"alps-stream-size": str(first["size"]), "cache-control": "no-store"},
        content_type="application/octet-stream",
    )
    # Sanic writes the status line and headers with the first body bytes; an
    # empty send puts them on the wire now, so a follower of a quiet job knows
    # at once that the stream is open.
    await response.send(b"")
    log_request(request, 200)
    position = offset
    watch = [caller.identity, caller.role, job_id, stream, position]
    try:
        while True:
            # A follow may last for hours: it ends once the ACL no longer gives
            # the caller the role the follow began with.
            if not _still_allowed(api, caller, request):
                break
            result = await api.call(
                api.worker.read,
                caller.identity,
                caller.role,
                job_id,
                stream,
                position,
                READ_CHUNK,
            )
            if result["data"]:
                position += len(result["data"])
                await response.send(result["data"])
                continue
            if result["jobStatus"] == "stopped":
                break
            # An ACL reload wakes only the followers that already wait, and it
            # may have come during the read above: check once more, with no
            # await between this check and the wait's sign-up.
            if not _still_allowed(api, caller, request):
                break
            watch[4] = position
            keepalive = api.config.response_timeout / 3
            if not await api.waiter.wait(watch, keepalive):
                # An empty write sends nothing but restarts Sanic's response timer.
                await request.protocol.send(b"")  # type: ignore[attr-defined]
        await response.eof()
    except AlpsError as error:
        logger.warning(event("follow cut", path=request.path, error=error.message))
        request.transport.close()


def _still_allowed(api: Api, caller: Caller, request: Request) -> bool:
    """Return False, and log it, once the ACL no longer gives the caller its role."""
    if api.acl.role_of(caller.identity) == caller.role:
        return True
    logger.info(event("follow ended", path=request.path, why="acl changed"))
    return False


def _query_window(request: Request) -> tuple[int, int | None]:
    offset = _query_number(request, "offset")
    limit = _query_number(request, "limit")
    return offset or 0, limit


def _query_number(request: Request, name: str) -> int | None:
    values = request.args.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise InvalidRequest(f"parameter {name!r} is given more than once")
    text = values[0]
    value = whole_number(text)
    if value is None or value > MAX_OFFSET:
        raise InvalidRequest(
            f"invalid {name} {text[:40]!r}: must be a whole number "
            f"from 0 to {MAX_OFFSET}"
        )
    return value


def _parse_range(header: str, size: int) -> Window:
    """Return the window of a single ``bytes=`` range, as RFC 9110 reads it."""
    match = _RANGE.match(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        shown = header[:60]
        raise InvalidRequest(
            f"invalid Range header {shown!r}: use one range such as bytes=0-99, "
            "bytes=100- or bytes=-100"
        )
    first, last = match.group(1), match.group(2)
    if first == "":
        length = int(last)
        if length == 0 or size == 0:
            raise _unsatisfiable(header, size)
        return Window(start=max(0, size - length), end=size, partial=True)
    start = int(first)
    end = size if last == "" else min(size, int(last) + 1)
    if last != "" and int(last) < start:
        raise InvalidRequest(
            f"invalid Range header {header[:60]!r}: the end is before the start"
        )
    if start >= size:
        raise _unsatisfiable(header, size)
    return Window(start=start, end=end, partial=True)


def _unsatisfiable(header: str, size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(
        f"range {header[:60]!r} is outside the stream, which has {size} bytes",
        headers={"content-range": f"bytes */{size}"},
    )
