"""The ALPS exception tree.

Every error that a caller may see is an ``AlpsError``; its ``status`` is the HTTP
status that the API answers with, and its message is the ``error`` text::

    AlpsError (500)
    ├── InvalidRequest (400)     a field of the request is malformed
    ├── NotAuthorized (401)      the identity is not in the ACL
    ├── Forbidden (403)          the role may not do this
    ├── JobNotFound (404)        no such job, or not visible to the caller
    ├── PayloadTooLarge (413)    the request body is over the limit
    ├── RangeNotSatisfiable (416) a byte range starts past the end of a stream
    └── WorkerUnavailable (503)  the worker cannot be reached

``ConfigError`` is separate: it is raised while loading a configuration file and
never reaches an HTTP client.
"""

from __future__ import annotations


class AlpsError(Exception):
    """An error with a message that is safe to show to the caller."""

    status = 500
    default_message = "internal error: the request could not be completed"

    def __init__(
        self, message: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        message = message or self.default_message
        super().__init__(message)
        self.message = message
        # Response headers that go with the error, such as Content-Range on 416.
        self.headers = headers or {}


class InvalidRequest(AlpsError):
    status = 400


class NotAuthorized(AlpsError):
    status = 401
    default_message = "you are not authorized to perform that action"


class Forbidden(AlpsError):
    status = 403


class JobNotFound(AlpsError):
    status = 404
    default_message = "no job found with that ID"


class PayloadTooLarge(AlpsError):
    status = 413


class RangeNotSatisfiable(AlpsError):
    status = 416


class WorkerUnavailable(AlpsError):
    status = 503


class ConfigError(Exception):
    """A configuration file is missing, unreadable or invalid."""


# Exceptions that cross the worker's RPC boundary, by their qualified class name.
REMOTE_ERRORS: dict[str, type[AlpsError]] = {
    f"{cls.__module__}.{cls.__name__}": cls
    for cls in (
        AlpsError,
        InvalidRequest,
        NotAuthorized,
        Forbidden,
        JobNotFound,
        PayloadTooLarge,
        RangeNotSatisfiable,
        WorkerUnavailable,
    )
}
