"""Replay progress on stderr (rich): share of bytes read, events, rate and ETA; terminals only."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from rich.progress import BarColumn
from rich.progress import Progress as RichProgress
from rich.progress import TextColumn, TimeRemainingColumn

from sensor import terminal


class Progress:
    """Call with (bytes_done, bytes_total) per segment, or (-1, 0) as a heartbeat."""

    def __init__(self, total_bytes: int, events: Callable[[], int],
                 stream: TextIO | None = None, *, delay_s: float = 1.0,
                 interval_s: float = 0.25, color: str = "auto") -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = terminal.is_terminal(self.stream)
        self.total = total_bytes
        self.done = 0
        self._events = events
        self._start = time.monotonic()
        self._next = self._start + delay_s
        self._interval = interval_s
        self._bar: RichProgress | None = None
        self._task = 0
        self._color = color

    def _open(self) -> RichProgress:
        bar = RichProgress(
            TextColumn("replay: {task.percentage:5.1f}% of {task.fields[mb]:.1f} MB, "
                       "{task.fields[events]:,} events, {task.fields[rate]:,.0f} events/s"),
            BarColumn(), TimeRemainingColumn(),
            console=terminal.console(self.stream, self._color), transient=True,
            auto_refresh=False)
        self._task = bar.add_task("replay", total=max(self.total, 1), mb=self.total / 1e6,
                                  events=0, rate=0.0)
        bar.start()
        return bar

    def __call__(self, done: int, total: int) -> None:
        if done >= 0:
            self.done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._interval
        if self._bar is None:
            self._bar = self._open()
        n = self._events()
        self._bar.update(self._task, completed=self.done, events=n,
                         rate=n / max(now - self._start, 1e-9))
        self._bar.refresh()

    def close(self) -> None:
        """Take the progress bar off the screen."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
