"""A progress line on stderr for long replays (only when stderr is a terminal)."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    """Call with (bytes_done, bytes_total) per segment, or (-1, 0) as a heartbeat."""

    def __init__(self, total_bytes: int, events: Callable[[], int],
                 stream: TextIO | None = None, *, delay_s: float = 1.0,
                 interval_s: float = 0.25) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.total = total_bytes
        self.done = 0
        self._events = events
        self._start = time.monotonic()
        self._next = self._start + delay_s
        self._interval = interval_s
        self._shown = False

    def __call__(self, done: int, total: int) -> None:
        if done >= 0:
            self.done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._interval
        elapsed = max(now - self._start, 1e-9)
        n = self._events()
        pct = 100.0 * self.done / self.total if self.total else 0.0
        self.stream.write(f"\rreplay: {pct:5.1f}% of {self.total / 1e6:.1f} MB, {n:,} events, "
                          f"{n / elapsed:,.0f} events/s ")
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        """Erase the progress line."""
        if self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
