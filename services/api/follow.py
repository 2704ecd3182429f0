"""Waiting for output to grow, for every follower at once, on one thread.

A follower that has read all there is waits here. Rather than hold a thread and
a worker connection per follower, one thread sends all the pending waits to the
worker in a single ``wait_any`` call and resolves the followers whose streams are
ready. When a follower joins during a call, ``wake`` ends that call so that the
next one includes it; an epoch makes the wake count even when it reaches the
worker before the call does. The number of threads and connections stays the
same however many clients follow, and a follower that hangs up leaves nothing
behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
import uuid
from typing import Any

from alps.errors import AlpsError
from alps.ipc import WorkerClient
from alps.logs import event

logger = logging.getLogger("alps.api")

# Maximum duration of one wait_any call, in seconds; the worker caps it too.
WAIT_SECONDS = 10.0
# Pause after a failed call (worker down), so the loop does not spin.
RETRY_SECONDS = 0.5


class FollowWaiter:
    def __init__(self, worker: WorkerClient) -> None:
        self._worker = worker
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[list[Any], asyncio.Future[bool]]] = {}
        self._ids = itertools.count()
        self._changed = threading.Event()
        self._thread: threading.Thread | None = None
        # Names this waiter in the worker's wake calls, apart from other APIs'.
        self._name = uuid.uuid4().hex
        # Counts the watches added; a wait_any call carries the count it saw.
        self._epoch = 0
        # Whether a wait_any call is under way; set with the watches it took.
        self._in_call = False

    async def wait(self, watch: list[Any], timeout: float) -> bool:
        """Wait until ``watch`` is ready; return False after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        key = next(self._ids)
        with self._lock:
            self._pending[key] = (watch, future)
            self._epoch += 1
            epoch = self._epoch
            in_call = self._in_call
            self._ensure_thread()
        self._changed.set()
        if in_call:
            # The call under way took its watches before this one: end it, even
            # if it has not reached the worker yet.
            await loop.run_in_executor(None, self._wake_worker, epoch)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._pending.pop(key, None)

    def wake_all(self) -> None:
        """Wake every follower, so that each checks again whether it may go on."""
        with self._lock:
            futures = [future for _, future in self._pending.values()]
        for future in futures:
            _resolve(future)

    def _wake_worker(self, epoch: int) -> None:
        # On failure the waiting thread meets the same error and reports it.
        with contextlib.suppress(AlpsError):
            self._worker.wake(self._name, epoch)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="alps-follow", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            self._changed.wait()
            self._changed.clear()
            with self._lock:
                items = list(self._pending.values())
                epoch = self._epoch
                self._in_call = bool(items)
            if not items:
                continue
            watches = [watch for watch, _ in items]
            try:
                ready = self._worker.wait_any(watches, WAIT_SECONDS, self._name, epoch)
            except Exception as error:  # followers must not hang on any failure
                logger.warning(event("follow wait failed", error=repr(error)))
                ready = list(range(len(items)))
                time.sleep(RETRY_SECONDS)
            finally:
                with self._lock:
                    self._in_call = False
            for index in ready:
                _resolve(items[index][1])
            self._changed.set()


def _resolve(future: asyncio.Future[bool]) -> None:
    def set_ready() -> None:
        if not future.done():
            future.set_result(True)

    # While the API shuts down, the loop may close under a follower.
    with contextlib.suppress(RuntimeError):
        future.get_loop().call_soon_threadsafe(set_ready)
