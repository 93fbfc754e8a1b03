"""One sink's delivery: a worker thread, a bounded in-memory queue, the disk spool, retries.

Order is kept: the queue only ever holds alerts older than everything in the spool. An
alert goes to the spool instead of the queue when the queue is full, when the sink is
failing, or when the spool is not empty; the worker drains the queue first, then the
spool. When the sink starts failing, and at shutdown, alerts still in memory are written
to the front of the spool, so nothing waits in memory for a sink that is down.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

from alerts.backoff import Backoff
from alerts.config import DeliveryConfig
from alerts.deadletter import DeadLetterFile
from alerts.errors import (AlertModelError, PermanentDeliveryError, RetryableDeliveryError,
                           SpoolError, SpoolFullError)
from alerts.model import Alert
from alerts.secrets import Redactor
from alerts.sinks.base import Sink
from alerts.spool import Spool, SpoolRecord

log = logging.getLogger("alerts.delivery")


class SinkWorker:
    """Delivers alerts to one sink from its own thread; `offer` never blocks on the sink."""

    def __init__(self, sink: Sink, sink_type: str, delivery: DeliveryConfig, spool: Spool,
                 dead_letter: DeadLetterFile, *, redactor: Redactor | None = None,
                 backoff: Backoff | None = None) -> None:
        self.sink = sink
        self.name = sink.name
        self._type = sink_type
        self._delivery = delivery
        self._spool = spool
        self._dead = dead_letter
        self._redact = redactor or Redactor()
        self._backoff = backoff or Backoff(delivery.backoff_initial_s, delivery.backoff_max_s,
                                           delivery.retry_after_max_s)
        self._cond = threading.Condition()
        self._stop_event = threading.Event()
        self._queue: collections.deque[Alert] = collections.deque()
        self._inflight: list[Alert] = []
        self._failing = False
        self._stopping = False
        self._closed = False
        self._abandoned = False
        self._thread: threading.Thread | None = None
        self._counters = dict.fromkeys(
            ("delivered", "failed", "retries", "spooled", "dead_lettered", "lost"), 0)
        self._last_error: str | None = None
        self._count_lock = threading.Lock()
        self._spool_full = False
        self._attempt = 0  # consecutive failed attempts (backoff exponent)
        self._pause_s = 0.0

    def _count(self, key: str, n: int) -> None:
        with self._count_lock:
            self._counters[key] += n

    # -- producer side -------------------------------------------------------------------
    def start(self) -> None:
        """Open the spool (a previous run's backlog drains first) and start the thread."""
        self._spool.open()
        if self._spool.pending:
            log.info("sink '%s': %d spooled alert(s) from a previous run will be delivered first",
                     self.name, self._spool.pending)
        self._thread = threading.Thread(target=self._run, name=f"netvigil-sink-{self.name}",
                                        daemon=True)
        self._thread.start()

    def offer(self, alert: Alert) -> None:
        """Queue an alert, or spool it to disk; never waits for the sink."""
        with self._cond:
            if self._closed:
                self._to_spool(alert)
                self._spool.close()
                return
            if self._spool.pending or self._failing or len(self._queue) >= self._delivery.queue_size:
                self._to_spool(alert)
            else:
                self._queue.append(alert)
            self._cond.notify()

    def _to_spool(self, alert: Alert) -> None:
        try:
            self._spool.append(alert.json_bytes)
            self._count("spooled", 1)
            self._spool_full = False
        except SpoolFullError as exc:
            if not self._spool_full:
                log.warning("sink '%s': %s; further alerts go to %s until it drains",
                            self.name, exc, self._dead.path)
                self._spool_full = True
            self._dead_letter([alert], f"not delivered: {exc}", sync=False)
        except SpoolError as exc:
            log.error("sink '%s': %s", self.name, exc)
            self._dead_letter([alert], f"not delivered: {exc}", sync=False)

    def _dead_letter(self, alerts: list[Alert], reason: str, raw: bytes | None = None,
                     *, sync: bool = True) -> None:
        try:
            if raw is not None:
                self._dead.write(reason, raw=raw, sync=sync)
                self._count("dead_lettered", 1)
            for alert in alerts:
                self._dead.write(reason, alert=alert, sync=sync)
                self._count("dead_lettered", 1)
        except SpoolError as exc:
            self._count("lost", len(alerts) + (raw is not None))
            log.error("sink '%s': LOST %d alert(s): %s; dead-letter failed too: %s",
                      self.name, len(alerts) + (raw is not None), reason, exc)

    # -- worker thread -------------------------------------------------------------------
    def _take(self) -> tuple[list[Alert], list[SpoolRecord] | None] | None:
        """Next batch (under the lock): from the queue first, then from the spool."""
        while True:
            if self._queue:
                n = min(self.sink.max_batch, len(self._queue))
                batch = [self._queue.popleft() for _ in range(n)]
                self._inflight = batch
                return batch, None
            if self._stopping:
                return None
            if self._spool.pending:
                records = self._spool.peek(self.sink.max_batch)
                if records:
                    return self._decode(records), records
                self._cond.wait(0.01)  # the writer is mid-record
                continue
            self._cond.wait(0.5)

    def _decode(self, records: list[SpoolRecord]) -> list[Alert]:
        alerts = []
        for rec in records:
            try:
                if rec.partial:
                    raise AlertModelError("record cut short (crash while writing)")
                alerts.append(Alert.from_json(rec.data))
            except AlertModelError as exc:
                log.warning("sink '%s': corrupt spool record moved to the dead-letter file: %s",
                            self.name, exc)
                self._dead_letter([], f"corrupt spool record: {exc}", raw=rec.data)
        return alerts

    def _run(self) -> None:
        while True:
            with self._cond:
                taken = self._take()
            if taken is None:
                return
            batch, records = taken
            outcome = self._deliver(batch, from_queue=records is None) if batch else "ok"
            with self._cond:
                if self._abandoned:
                    return
                if outcome == "requeue":
                    pass  # _deliver moved the batch and the queue to the spool
                elif outcome == "stopped":
                    return  # queue batch: stop() spools it; spool batch: still on disk
                else:
                    self._inflight = []
                    if records is not None:
                        self._spool.ack(records)
            if outcome == "requeue":
                self._stop_event.wait(self._pause_s)

    def _requeue_to_spool(self) -> None:
        """The sink failed: move the in-flight batch and the queue to the front of the
        spool (fsynced), so nothing waits in memory while the sink is down."""
        moved = list(self._inflight) + list(self._queue)
        try:
            self._spool.prepend([a.json_bytes for a in moved])
        except SpoolError as exc:
            log.error("sink '%s': %s", self.name, exc)
            self._dead_letter(moved, f"not delivered: {exc}")
        else:
            self._count("spooled", len(moved))
        self._inflight = []
        self._queue.clear()

    def _deliver(self, batch: list[Alert], *, from_queue: bool = False) -> str:
        while True:
            try:
                self.sink.deliver(batch)
            except PermanentDeliveryError as exc:
                reason = self._redact(str(exc))
                log.warning("sink '%s': %d alert(s) refused, kept in %s: %s",
                            self.name, len(batch), self._dead.path, reason)
                self._dead_letter(batch, reason)
                self._set_ok()
                return "dead"
            except (RetryableDeliveryError, OSError, ValueError) as exc:
                retry_after = getattr(exc, "retry_after", None)
                reason = self._redact(str(exc)) if isinstance(exc, RetryableDeliveryError) \
                    else f"sink '{self.name}': {type(exc).__name__}"
                self._count("failed", 1)
                self._last_error = reason
                with self._cond:
                    first = not self._failing
                    self._failing = True
                    if from_queue and not self._stopping:
                        # in the same step as "failing" becomes visible: nothing is left
                        # in memory once stats say the sink is down
                        self._requeue_to_spool()
                if first:
                    log.warning("%s; retrying with backoff, new alerts go to the disk spool", reason)
                else:
                    log.debug("%s (attempt %d)", reason, self._attempt + 1)
                if self._stopping:
                    return "stopped"
                delay = self._backoff.delay(self._attempt, retry_after)
                self._attempt += 1
                self._count("retries", 1)
                if from_queue:
                    self._pause_s = delay
                    return "requeue"
                if self._stop_event.wait(delay):
                    return "stopped"
            else:
                self._count("delivered", len(batch))
                self._set_ok()
                return "ok"

    def _set_ok(self) -> None:
        self._attempt = 0
        with self._cond:
            if self._failing:
                log.warning("sink '%s' recovered; %d spooled alert(s) to deliver",
                            self.name, self._spool.pending)
            self._failing = False

    # -- lifecycle -----------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop waiting on backoffs; deliver what is queued while the sink answers."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._stop_event.set()

    def finish(self, deadline: float) -> None:
        """Wait for the thread until `deadline` (monotonic), then persist what is left."""
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        alive = self._thread is not None and self._thread.is_alive()
        with self._cond:
            if alive:
                self._abandoned = True
            leftovers = list(self._inflight) + list(self._queue)
            self._inflight, self._closed = [], True
            self._queue.clear()
            try:
                self._spool.prepend([a.json_bytes for a in leftovers])
                self._count("spooled", len(leftovers))
            except SpoolError as exc:
                log.error("sink '%s': %s", self.name, exc)
                self._dead_letter(leftovers, f"not delivered at shutdown: {exc}")
            self._spool.close()
        if alive:
            log.warning("sink '%s' did not answer before shutdown; %d alert(s) kept in the spool",
                        self.name, len(leftovers))
            self.sink.abort()
        else:
            self.sink.close()

    def sync_spool(self) -> None:
        """Apply the spool's fsync interval policy (called by the router's ticker)."""
        try:
            self._spool.sync_if_due()
        except (SpoolError, OSError) as exc:
            log.error("sink '%s': %s", self.name, exc)

    def stats(self) -> dict[str, Any]:
        """Counters and state of this sink."""
        with self._cond:
            state = "stopped" if self._closed else ("failing" if self._failing else "ok")
            with self._count_lock:
                counters = dict(self._counters)
            return {"type": self._type, **counters,
                    "queued": len(self._queue) + len(self._inflight),
                    "spool_pending": self._spool.pending, "state": state,
                    "last_error": self._last_error}
