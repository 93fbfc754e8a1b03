"""`netvigil run` on a terminal: a live view (rich.live) of the agent's figures, alerts, events.

The header shows events/s, lost events, alerts by priority and sink health; below it the
latest alerts and (with --events) the latest events, with namespace and pod where known.
When stdout is a pipe the same header alone is drawn on stderr (transient), so nothing but
JSON lines ever reaches the pipe. The view is redrawn from the run loop (`tick`), never from
a thread of its own: the hot path's data is read where it is written. While it is drawn,
whatever else goes to the terminal (notices, log lines; stdout too when the view is on
stdout) is printed above it: a line written past the view would leave a broken copy of it
on the screen.
"""
from __future__ import annotations

import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from alerts import PRIORITY_STYLES, Alert, sink_states
from rules.priority import PRIORITIES
from sensor import logging_setup
from sensor.event_output import clock, event_cells, event_table
from sensor.terminal import cell, column_table, fit_columns

REFRESH_S = 0.25
ALERT_COLUMNS: tuple[tuple[str, int | None, str], ...] = (
    ("TIME", 12, "left"), ("PRIORITY", 13, "left"), ("RULE", 32, "left"),
    ("NAMESPACE", 12, "left"), ("POD", 20, "left"), ("OUTPUT", None, "left"))
KEEP_ROWS = 200  # latest alerts/events kept for the view (the screen shows what fits)


class LiveView:
    """The live view; feed it with `on_event`/`on_alert`, call `tick()` from the run loop."""

    def __init__(self, console: Console, stats: Callable[[], Any],
                 sinks: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None, *,
                 title: str = "netvigil", show_events: bool = False,
                 header_only: bool = False) -> None:
        self.console = console
        self._stats = stats
        self._sinks = sinks
        self.title = title
        self.show_events = show_events and not header_only
        self.header_only = header_only
        self.alerts: deque[Alert] = deque(maxlen=KEEP_ROWS)
        self.events: deque[Mapping[str, Any]] = deque(maxlen=KEEP_ROWS)
        self.by_priority: Counter[str] = Counter()
        self._rate = 0.0
        self._last = (time.monotonic(), 0)
        self._next = 0.0
        # stdout is only redirected when the view is on it: piped stdout carries JSON lines
        self._live = Live(console=console, auto_refresh=False, transient=header_only,
                          redirect_stdout=not header_only, redirect_stderr=True,
                          vertical_overflow="crop")
        self._redirects = ExitStack()

    # ------------------------------------------------------------ feeding
    def on_event(self, ev: Mapping[str, Any]) -> None:
        """Keep an event for the events table."""
        if self.show_events:
            self.events.append(ev)

    def on_alert(self, alert: Alert) -> None:
        """Count an alert and keep it for the table (its fields name its pod and namespace)."""
        self.by_priority[alert.priority] += 1
        if not self.header_only:
            self.alerts.append(alert)

    def warn(self, message: str) -> None:
        """A line above the view (it stays when the view moves on)."""
        self.console.print(Text(message, style="yellow"))

    # ------------------------------------------------------------ drawing
    def __enter__(self) -> LiveView:
        stderr = sys.stderr
        self._live.start()   # on a terminal: sys.stderr (and stdout) now print above the view
        if sys.stderr is not stderr:
            self._redirects.enter_context(logging_setup.streams_moved(stderr, sys.stderr))
        self.tick(force=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Draw the last figures and stop (they stay on screen, unless header-only); what is
        printed next goes below them. Closing twice is harmless."""
        if not self._live.is_started:
            return
        self.tick(force=True)
        self._redirects.close()
        self._live.stop()

    def tick(self, force: bool = False) -> None:
        """Redraw if REFRESH_S has passed since the last drawing (or when forced)."""
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + REFRESH_S
        events = self._stats().events
        then, before = self._last
        if now - then >= 1.0:
            self._rate = (events - before) / (now - then)
            self._last = (now, events)
        self._live.update(self.render(), refresh=True)

    def render(self) -> RenderableType:
        """The whole view as it is now."""
        parts: list[RenderableType] = [self._header()]
        if not self.header_only:
            height = max(self.console.size.height - 10, 4)
            alert_rows = height // 2 if self.show_events else height
            parts.append(self._alerts_table(alert_rows))
            if self.show_events:
                parts.append(self._events_table(height - alert_rows))
        # an empty last line holds the cursor: the `^C` a terminal echoes lands there, where the
        # next redraw erases it (echoed past a full-width line it wraps, and the redraw would
        # start one line low, leaving a broken copy of the view's top)
        return Group(*parts, Text(""))

    def _header(self) -> Panel:
        st = self._stats()
        figures = Text.assemble(
            ("events/s ", "bold"), f"{self._rate:,.0f}   ",
            ("events ", "bold"), f"{st.events:,}   ",
            ("lost ", "bold"), (f"{st.lost:,}", "bold red" if st.lost else ""), "   ",
            ("processes ", "bold"), f"{st.processes:,}   ",
            ("decode errors ", "bold"), f"{st.decode_errors:,}")
        alerts = Text("alerts ", style="bold")
        counted = [(p, self.by_priority[p]) for p in PRIORITIES if self.by_priority[p]]
        if not counted:
            alerts.append("none")
        for i, (prio, n) in enumerate(counted):
            alerts.append(("  " if i else "") + f"{prio} {n:,}", style=PRIORITY_STYLES.get(prio, ""))
        lines = [figures, alerts]
        if self._sinks is not None:
            lines.append(sink_health(self._sinks()))
        return Panel(Group(*lines), title=self.title, title_align="left", expand=True)

    def _alerts_table(self, rows: int) -> Table:
        table = column_table(fit_columns(ALERT_COLUMNS, self.console.size.width), title="latest alerts",
                             title_justify="left", title_style="bold")
        for alert in list(self.alerts)[-rows:] if rows > 0 else []:
            fields = alert.output_fields
            table.add_row(cell(clock(alert.time_ns)), cell(alert.priority, PRIORITY_STYLES.get(alert.priority, "")),
                          cell(alert.rule), cell(fields.get("k8s.ns.name") or "-"),
                          cell(fields.get("k8s.pod.name") or "-"), cell(alert.message))
        return table

    def _events_table(self, rows: int) -> Table:
        table = event_table(width=self.console.size.width, title="latest events", title_justify="left",
                            title_style="bold")
        for ev in list(self.events)[-rows:] if rows > 0 else []:
            table.add_row(*event_cells(ev))
        return table


def sink_health(stats: Mapping[str, Mapping[str, Any]]) -> Text:
    """`sinks  slack ok 12 sent  hook FAILING 3 spooled`, failing sinks in red."""
    text = Text("sinks ", style="bold")
    parts = sink_states(stats)
    if not parts:
        text.append("none")
    for i, (part, failing) in enumerate(parts):
        text.append(("  " if i else "") + part, style="bold red" if failing else "green")
    return text


def view_for_run(*, as_json: bool, show_events: bool, color: str, stats: Callable[[], Any],
                 sinks: Callable[[], Mapping[str, Mapping[str, Any]]] | None,
                 title: str) -> LiveView | None:
    """The view `netvigil run` draws: full on a terminal stdout, header-only on a terminal
    stderr while stdout is piped (or --json), none when neither is a terminal."""
    import sys  # noqa: PLC0415

    from sensor import terminal  # noqa: PLC0415

    if not as_json:
        return LiveView(terminal.console(sys.stdout, color), stats, sinks, title=title,
                        show_events=show_events)
    if terminal.is_terminal(sys.stderr) and not terminal.is_terminal(sys.stdout):
        return LiveView(terminal.console(sys.stderr, color), stats, sinks, title=title,
                        header_only=True)
    return None
