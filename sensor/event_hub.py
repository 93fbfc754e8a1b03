"""Where the hot path hands events and alerts to everything that only watches them.

`publish(event)` and `alert(alert)` run on the hot path; `flush()` runs once per poll
turn on the same thread. Together they count (events by type, rule matches by rule
and priority), keep a short history for `observe --last`, and offer the items to each
reader's bounded queue. Nothing here waits: a full reader queue drops the item and
counts it. Readers (the local API) drain their queues on
their own threads. Counters are written by the hot path only and read by copying
(a dict copy is atomic under the GIL), so scrapes need no lock on the hot path.
"""
from __future__ import annotations

import itertools
import operator
import threading
from collections import _count_elements, deque  # type: ignore[attr-defined]
from collections.abc import Callable, Iterable, Mapping
from typing import Any

EVENT = "event"
ALERT = "alert"
_TYPE_OF = operator.itemgetter("evt.type")


class Reader:
    """One watcher's bounded queue of (kind, item) pairs and its counters.

    `types` (a set of `evt.type` values) is the cheap prefilter applied on the hot
    path; `events`/`alerts` say which kinds it wants. Everything else is filtered by
    the reader's own thread.
    """

    _ids = itertools.count(1)

    def __init__(self, capacity: int, *, types: Iterable[str] | None = None,
                 events: bool = True, alerts: bool = True, name: str = "") -> None:
        self.id = next(self._ids)
        self.name = name or f"reader-{self.id}"
        self.capacity = capacity
        self.types = frozenset(types) if types else None
        self.events = events
        self.alerts = alerts
        self.queue: deque[tuple[str, Any]] = deque()
        self.offered = 0
        self.dropped = 0

    def offer(self, kind: str, item: Any) -> None:
        """Queue item, or count it dropped when the queue is full (never waits)."""
        self.offered += 1
        if len(self.queue) < self.capacity:
            self.queue.append((kind, item))
        else:
            self.dropped += 1

    def offer_many(self, kind: str, items: list[Any]) -> None:
        """Queue what fits of items, count the rest dropped (never waits)."""
        self.offered += len(items)
        room = self.capacity - len(self.queue)
        if room >= len(items):
            self.queue.extend((kind, item) for item in items)
        else:
            room = max(room, 0)
            self.queue.extend((kind, item) for item in items[:room])
            self.dropped += len(items) - room

    def take(self, limit: int = 1024) -> list[tuple[str, Any]]:
        """Up to `limit` queued items, oldest first (reader thread)."""
        out = []
        q = self.queue
        while q and len(out) < limit:
            out.append(q.popleft())
        return out


class EventHub:
    """Counters, recent history and reader fan-out of the live agent.

    `publish` is the bound `append` of a pending list (a C call, no Python frame per
    event); `flush()`, called by the poll loop once per turn, counts the pending events
    by type, moves them into the history and offers them to the readers, all in
    batch (C-level loops), so the per-event cost stays a few tens of nanoseconds.
    """

    def __init__(self, history: int = 2048, alert_history: int = 512) -> None:
        self.events_by_type: dict[Any, int] = {}
        self.matches: dict[tuple[str, str], int] = {}
        self.history: deque[Mapping[str, Any]] = deque(maxlen=history)
        self.alert_history: deque[Any] = deque(maxlen=alert_history)
        self._readers: tuple[Reader, ...] = ()
        self._lock = threading.Lock()
        self.readers_total = 0
        self.dropped_closed = 0  # drops of readers that have gone
        self._pending: list[Mapping[str, Any]] = []
        self.publish: Callable[[Mapping[str, Any]], None] = self._pending.append
        """Hot path: one event went through the pipeline (counted at the next flush)."""

    def flush(self) -> int:
        """Count, keep and fan out the events published since the last flush (the poll
        loop's thread, once per turn); returns how many."""
        pending = self._pending
        if not pending:
            return 0
        batch = pending.copy()   # the same list stays: consumers hold its bound append
        pending.clear()
        try:
            types = list(map(_TYPE_OF, batch))
        except KeyError:  # an event without evt.type (none today): the slow way
            types = [e.get("evt.type") for e in batch]
        _count_elements(self.events_by_type, types)
        self.history.extend(batch)
        for r in self._readers:
            if r.events:
                r.offer_many(EVENT, batch if r.types is None else
                             [e for e, t in zip(batch, types) if t in r.types])
        return len(batch)

    def alert(self, alert: Any) -> None:
        """One alert (`alerts.Alert`, serialised later by whoever reads it) was raised."""
        key = (alert.rule, alert.priority)
        self.matches[key] = self.matches.get(key, 0) + 1
        self.alert_history.append(alert)
        for r in self._readers:
            if r.alerts:
                r.offer(ALERT, alert)

    # -- readers (other threads) ------------------------------------------------------
    def attach(self, reader: Reader) -> None:
        """Start offering items to reader."""
        with self._lock:
            self._readers = (*self._readers, reader)
            self.readers_total += 1

    def detach(self, reader: Reader) -> None:
        """Stop offering items to reader (its drops stay counted)."""
        with self._lock:
            if reader in self._readers:
                self._readers = tuple(r for r in self._readers if r is not reader)
                self.dropped_closed += reader.dropped

    @property
    def readers(self) -> tuple[Reader, ...]:
        return self._readers

    def dropped(self) -> int:
        """Items dropped for full reader queues, over every reader so far."""
        return self.dropped_closed + sum(r.dropped for r in self._readers)

    def counts(self) -> tuple[dict[Any, int], dict[tuple[str, str], int]]:
        """Copies of the events-by-type and matches-by-(rule, priority) counters."""
        return dict(self.events_by_type), dict(self.matches)

    def recent(self, kind: str) -> list[Any]:
        """A copy of the recent history of events or alerts."""
        return list(self.history if kind == EVENT else self.alert_history)


def chain_consumers(*consumers: Callable[[Mapping[str, Any]], None] | None) -> Callable[[Mapping[str, Any]], None]:
    """One event consumer calling each given one in order (None entries left out)."""
    present = [c for c in consumers if c is not None]
    if len(present) == 1:
        return present[0]

    def chained(event: Mapping[str, Any]) -> None:
        for consumer in present:
            consumer(event)

    return chained
