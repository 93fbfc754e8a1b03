"""Noise control: aggregation of identical alerts and a per-rule rate limit.

No alert disappears silently. Every alert that is held back is counted, and a summary
alert reports it: the last held-back alert, with a new uuid, its output suffixed
"(and N more in the last W s)" and `netvigil.suppressed_count` = N in output_fields.
Invariant: the sum over emitted alerts of (1 + netvigil.suppressed_count) equals the
number of alerts submitted once all summaries are flushed (`flush_all`).
"""
from __future__ import annotations

import dataclasses
import re
import threading
import uuid as _uuid
from collections.abc import Hashable
from typing import Any

from alerts.config import NoiseConfig
from alerts.model import SUPPRESSED_COUNT, Alert

_SUFFIX_RE = re.compile(r" \(and \d+ more in the last [\d.]+ s(?:, rate limited)?\)$")
WINDOW_FIELD = "netvigil.suppressed_window_s"
REASON_FIELD = "netvigil.suppressed_reason"


def _weight(alert: Alert) -> int:
    return 1 + alert.suppressed_count


def summarize(last: Alert, total_weight: int, window_s: float, reason: str) -> Alert:
    """The alert standing for `total_weight` held-back alerts, `last` being the newest."""
    more = total_weight - 1
    if more <= 0:
        return last
    base_output = _SUFFIX_RE.sub("", last.output) if last.suppressed_count else last.output
    base_fields = dict(last.output_fields)
    base_fields.pop(SUPPRESSED_COUNT, None)
    suffix = f" (and {more} more in the last {window_s:g} s" + \
        (", rate limited)" if reason == "rate_limit" else ")")
    fields: dict[str, Any] = {**base_fields, SUPPRESSED_COUNT: more,
                              WINDOW_FIELD: round(window_s, 3), REASON_FIELD: reason}
    return last.with_changes(output=base_output + suffix, output_fields=fields,
                             uuid=str(_uuid.uuid4()))


@dataclasses.dataclass
class _Window:
    started: float
    weight: int = 0
    last: Alert | None = None


@dataclasses.dataclass
class _Bucket:
    tokens: float
    updated: float
    held_weight: int = 0
    held_since: float = 0.0
    last: Alert | None = None


class NoiseController:
    """Thread-safe; `process` on every alert, `due` periodically, `flush_all` at shutdown."""

    def __init__(self, config: NoiseConfig) -> None:
        self._agg = config.aggregate
        self._rl = config.rate_limit
        self._windows: dict[Hashable, _Window] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self.received = 0
        self.aggregated = 0
        self.rate_limited = 0
        self.summaries = 0

    def _key(self, alert: Alert) -> Hashable:
        f = alert.output_fields
        return (alert.rule, tuple(repr(f.get(name)) for name in self._agg.key_fields))

    def process(self, alert: Alert, now: float) -> list[Alert]:
        """Alerts to forward now for one incoming alert (zero or one)."""
        with self._lock:
            self.received += 1
            if self._agg.enabled:
                key = self._key(alert)
                window = self._windows.get(key)
                if window is not None and now - window.started < self._agg.window_s:
                    window.weight += _weight(alert)
                    window.last = alert
                    self.aggregated += 1
                    return []
                out: list[Alert] = []
                if window is not None and window.weight:
                    out.extend(self._limit(self._close_window(window), now))
                self._windows[key] = _Window(started=now)
                out.extend(self._limit(alert, now))
                return out
            return self._limit(alert, now)

    def _close_window(self, window: _Window) -> Alert:
        assert window.last is not None
        summary = summarize(window.last, window.weight, self._agg.window_s, "aggregate")
        if summary is not window.last:
            self.summaries += 1
        return summary

    def _limit(self, alert: Alert, now: float) -> list[Alert]:
        if not self._rl.enabled:
            return [alert]
        bucket = self._buckets.get(alert.rule)
        if bucket is None:
            bucket = self._buckets[alert.rule] = _Bucket(tokens=float(self._rl.burst), updated=now)
        bucket.tokens = min(float(self._rl.burst),
                            bucket.tokens + (now - bucket.updated) * self._rl.rate_per_s)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return [alert]
        if not bucket.held_weight:
            bucket.held_since = now
        bucket.held_weight += _weight(alert)
        bucket.last = alert
        self.rate_limited += 1
        return []

    def _report(self, bucket: _Bucket, now: float) -> Alert:
        assert bucket.last is not None
        elapsed = max(now - bucket.held_since, 0.001)
        summary = summarize(bucket.last, bucket.held_weight, round(elapsed, 1), "rate_limit")
        if summary is not bucket.last:
            self.summaries += 1
        bucket.held_weight, bucket.last = 0, None
        return summary

    def due(self, now: float) -> list[Alert]:
        """Summaries whose window or report interval has ended (call every ~0.25 s)."""
        out: list[Alert] = []
        with self._lock:
            for key, window in list(self._windows.items()):
                if now - window.started >= self._agg.window_s:
                    del self._windows[key]
                    if window.weight:
                        out.extend(self._limit(self._close_window(window), now))
            for bucket in self._buckets.values():
                if bucket.held_weight and now - bucket.held_since >= self._rl.report_interval_s:
                    out.append(self._report(bucket, now))
        return out

    def flush_all(self, now: float) -> list[Alert]:
        """Every pending summary, regardless of windows and limits (shutdown)."""
        out: list[Alert] = []
        with self._lock:
            for window in self._windows.values():
                if window.weight:
                    out.append(self._close_window(window))
            self._windows.clear()
            for bucket in self._buckets.values():
                if bucket.held_weight:
                    out.append(self._report(bucket, now))
        return out

    def stats(self) -> dict[str, int]:
        """Counters: received, aggregated, rate_limited, summaries."""
        with self._lock:
            return {"received": self.received, "aggregated": self.aggregated,
                    "rate_limited": self.rate_limited, "summaries": self.summaries}
