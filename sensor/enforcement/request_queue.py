"""The bounded queue between the hot thread and the enforcement manager.

The pipeline offers each match's enforcement request; a worker thread hands it to the
manager (cgroup and /proc lookups, map writes happen there). A full queue drops the
request and counts it: the hot thread never waits.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from rules.enforcement import EnforcementRequest

log = logging.getLogger(__name__)
DEFAULT_CAPACITY = 4096
_STOP = object()


class RequestQueue:
    """offer() from the hot thread, submit() on a worker thread."""

    def __init__(self, submit: Callable[[EnforcementRequest], Any],
                 capacity: int = DEFAULT_CAPACITY) -> None:
        self._submit = submit
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=capacity)
        self.capacity = capacity
        self.offered = 0
        self.dropped = 0
        self.submitted = 0
        self.failed = 0
        self._thread: threading.Thread | None = None

    def offer(self, req: EnforcementRequest) -> bool:
        """Queue a request without blocking; False (and counted) when the queue is full."""
        self.offered += 1
        try:
            self._queue.put_nowait(req)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="netvigil-enforce-queue",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            req = self._queue.get()
            if req is _STOP:
                return
            try:
                self._submit(req)
                self.submitted += 1
            except Exception:  # noqa: BLE001 - one bad request must not stop the worker
                self.failed += 1
                log.exception("enforcement request of rule %r failed", getattr(req, "rule", "?"))

    def stop(self, timeout: float = 5.0) -> None:
        """Let the worker finish what is queued (up to timeout), then stop it."""
        if self._thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("enforcement queue still full at shutdown: %d request(s) not submitted",
                        self._queue.qsize())
        self._thread.join(timeout)
        self._thread = None

    def stats(self) -> dict[str, int]:
        """offered, dropped (queue full), submitted, failed, and the current depth."""
        return {"offered": self.offered, "dropped": self.dropped, "submitted": self.submitted,
                "failed": self.failed, "depth": self._queue.qsize(), "capacity": self.capacity}
