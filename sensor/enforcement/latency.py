"""A bounded window of latency samples with percentiles."""
from __future__ import annotations

import threading
from collections import deque


class LatencyWindow:
    """The last `size` samples (ns); percentiles in milliseconds."""

    def __init__(self, size: int = 10000) -> None:
        self._samples: deque[int] = deque(maxlen=size)
        self._lock = threading.Lock()
        self.count = 0

    def add(self, ns: int) -> None:
        """Record one sample (negative values, from clock skew, count as 0)."""
        with self._lock:
            self._samples.append(max(0, ns))
            self.count += 1

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (0..100) in ms, or None without samples."""
        with self._lock:
            data = sorted(self._samples)
        if not data:
            return None
        idx = min(len(data) - 1, max(0, int(round(q / 100.0 * (len(data) - 1)))))
        return data[idx] / 1e6

    def summary(self) -> dict[str, float | int | None]:
        """count, p50_ms, p99_ms, max_ms."""
        return {"count": self.count, "p50_ms": self.percentile(50), "p99_ms": self.percentile(99),
                "max_ms": self.percentile(100)}
