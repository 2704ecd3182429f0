"""The RPC link between the API and the worker: Pyro5 over a Unix socket, msgpack.

``WorkerClient`` is the whole of the API's view of the worker. It keeps one Pyro5
proxy per thread (a proxy must not be shared between threads), turns a lost or
refused connection into ``WorkerUnavailable``, and reconnects by itself once the
worker is back.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

import Pyro5.api
import Pyro5.errors

from alps.errors import REMOTE_ERRORS, AlpsError, WorkerUnavailable
from alps.logs import event

logger = logging.getLogger(__name__)

HUB_OBJECT_ID = "alps.hub"


def configure_pyro() -> None:
    """Set the Pyro5 options that both sides of the link rely on."""
    # msgpack carries bytes as bytes; the default, serpent, would base64 them.
    Pyro5.api.config.SERIALIZER = "msgpack"
    for name, cls in REMOTE_ERRORS.items():
        Pyro5.api.register_dict_to_class(name, _error_from_dict)
        Pyro5.api.register_class_to_dict(cls, _error_to_dict)


def _error_to_dict(error: object) -> dict[str, Any]:
    assert isinstance(error, AlpsError)
    cls = type(error)
    return {
        "__class__": f"{cls.__module__}.{cls.__name__}",
        "__exception__": True,
        "message": error.message,
        "headers": error.headers,
    }


def _error_from_dict(classname: str, data: dict[str, Any]) -> AlpsError:
    return REMOTE_ERRORS[classname](data["message"], data.get("headers"))


def hub_uri(socket_path: str) -> str:
    return f"PYRO:{HUB_OBJECT_ID}@./u:{socket_path}"


class WorkerClient:
    """Calls to the worker's Hub, from any thread."""

    def __init__(self, socket_path: str, timeout: float | None = None) -> None:
        configure_pyro()
        self.uri = hub_uri(socket_path)
        self.timeout = timeout
        self._local = threading.local()
        self._reachable = True

    def start(
        self,
        identity: str,
        role: str,
        command: str,
        limits: dict | None = None,
        run_as: str | None = None,
    ) -> dict[str, Any]:
        # The request ID lets the worker recognise a start that it already ran
        # when the answer was lost and the call is sent again.
        request_id = uuid.uuid4().hex
        return self._call("start", identity, role, command, request_id, limits, run_as)

    def stop(self, identity: str, role: str, job_id: int) -> dict[str, Any]:
        return self._call("stop", identity, role, job_id)

    def status(self, identity: str, role: str, job_id: int) -> dict[str, Any]:
        return self._call("status", identity, role, job_id)

    def output(self, identity: str, role: str, job_id: int) -> dict[str, Any]:
        return self._call("output", identity, role, job_id)

    def read(
        self,
        identity: str,
        role: str,
        job_id: int,
        stream: str,
        offset: int,
        length: int,
    ) -> dict[str, Any]:
        return self._call("read", identity, role, job_id, stream, offset, length)

    def wait_any(
        self, watches: list[list[Any]], timeout: float, waiter: str, epoch: int
    ) -> list[int]:
        return self._call("wait_any", watches, timeout, waiter, epoch)

    def wake(self, waiter: str, epoch: int) -> None:
        self._call("wake", waiter, epoch)

    def list(
        self, identity: str, role: str, everyone: bool = False
    ) -> list[dict[str, Any]]:
        return self._call("list", identity, role, everyone)

    def take(self, identity: str, role: str, job_id: int) -> dict[str, Any]:
        return self._call("take", identity, role, job_id)

    def ping(self) -> dict[str, Any]:
        return self._call("ping")

    def _call(self, method: str, *args: Any) -> Any:
        proxy = getattr(self._local, "proxy", None)
        if proxy is not None:
            try:
                return getattr(proxy, method)(*args)
            except Pyro5.errors.CommunicationError:
                # The connection may predate a worker restart: drop it and try
                # once more on a new one. Every Hub call can be repeated safely.
                self._drop()
        proxy = self._connect()
        try:
            result = getattr(proxy, method)(*args)
        except Pyro5.errors.CommunicationError as error:
            self._drop()
            self._note_reachable(False, error)
            raise WorkerUnavailable(
                "the worker is unavailable; try again in a moment"
            ) from None
        self._note_reachable(True)
        return result

    def _note_reachable(self, reachable: bool, error: Exception | None = None) -> None:
        """Log each change between reachable and unreachable once, not per call."""
        if reachable == self._reachable:
            return
        self._reachable = reachable
        if reachable:
            logger.info(event("worker reachable", uri=self.uri))
        else:
            logger.warning(event("worker unreachable", uri=self.uri, error=error))

    def _connect(self) -> Pyro5.api.Proxy:
        proxy = Pyro5.api.Proxy(self.uri)
        if self.timeout is not None:
            proxy._pyroTimeout = self.timeout
        self._local.proxy = proxy
        return proxy

    def _drop(self) -> None:
        proxy = getattr(self._local, "proxy", None)
        self._local.proxy = None
        if proxy is not None:
            proxy._pyroRelease()
