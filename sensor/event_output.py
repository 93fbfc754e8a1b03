"""Printing events (and alerts among them): a rich table on a terminal, one JSON object per
line otherwise."""
from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, TextIO

from rich.table import Table
from rich.text import Text

from alerts import PRIORITY_STYLES, Alert
from rules.event import expanded

from sensor import terminal
from sensor.terminal import cell

#: (title, width, justify) of an event row; DETAIL takes the rest of the line.
COLUMNS: tuple[tuple[str, int | None, str], ...] = (
    ("TIME", 12, "left"), ("EVENT", 14, "left"), ("PID", 7, "right"), ("PROCESS", 16, "left"),
    ("NAMESPACE", 12, "left"), ("POD", 20, "left"), ("CONTAINER", 12, "left"),
    ("DETAIL", None, "left"),
)


def _detail(ev: Mapping[str, Any]) -> str:
    etype = ev.get("evt.type")
    if etype in ("execve", "execveat"):
        return f"{ev.get('proc.exepath', '')} [{ev.get('proc.cmdline', '')}] parent={ev.get('proc.pname', '?')}"
    if etype == "procexit":
        return f"exit status={ev.get('evt.arg.status')}"
    if etype == "clone":
        return f"child pid={ev.get('evt.rawres')}"
    if etype == "socket":
        return f"{ev.get('evt.arg.domain')} {ev.get('evt.arg.type')}"
    name = ev.get("fd.name", "")
    res = ev.get("evt.res", "")
    proto = ev.get("fd.l4proto", "")
    extra = f" newfd={ev.get('evt.arg.newfd')}" if etype in ("dup2", "dup3") else ""
    return f"{proto} {name} {res}{extra}".strip()


def clock(t_ns: Any) -> str:
    """HH:MM:SS.mmm (local time) of an event time in ns."""
    t = t_ns if isinstance(t_ns, int) else 0
    return time.strftime("%H:%M:%S", time.localtime(t / 1e9)) + f".{(t // 1_000_000) % 1000:03d}"


def event_cells(ev: Mapping[str, Any]) -> list[Text]:
    """The cells of one event row, in COLUMNS order (`-` where a field is absent), each
    shown literally (terminal.cell)."""
    return [cell(v) for v in (
        clock(ev.get("evt.time")), ev.get("evt.type", "?"), ev.get("proc.pid", "?"), ev.get("proc.name", "?"),
        ev.get("k8s.ns.name") or "-", ev.get("k8s.pod.name") or "-", str(ev.get("container.id", "?"))[:12],
        _detail(ev))]


def alert_cells(alert: Alert) -> list[Text]:
    """An alert as a row among events (COLUMNS order): EVENT is `ALERT` in the priority's
    colour, the process and pod come from the alert's fields, DETAIL is `Priority rule: output`."""
    fields = alert.output_fields
    style = PRIORITY_STYLES.get(alert.priority, "")
    return [cell(clock(alert.time_ns)), cell("ALERT", style), cell(fields.get("proc.pid", "-")),
            cell(fields.get("proc.name", "-")), cell(fields.get("k8s.ns.name") or "-"),
            cell(fields.get("k8s.pod.name") or "-"), cell(str(fields.get("container.id") or "-")[:12]),
            Text.assemble(cell(alert.priority, style), " ", cell(f"{alert.rule}: {alert.message}"))]


def event_table(*, width: int, header: bool = True, **kwargs: Any) -> Table:
    """An empty table with the event columns filling `width` (fixed widths, so rows line up)."""
    return terminal.column_table(terminal.fit_columns(COLUMNS, width), header=header, **kwargs)


class EventPrinter:
    """Writes events to a stream as table rows (terminal) or JSON lines (anything else)."""

    def __init__(self, stream: TextIO, as_json: bool, color: str = "auto") -> None:
        self.stream = stream
        self.as_json = as_json
        self._rows = None if as_json else terminal.StreamTable(terminal.console(stream, color),
                                                                COLUMNS)

    def __call__(self, ev: Mapping[str, Any]) -> None:
        if self._rows is None:
            self.stream.write(json.dumps(expanded(ev), separators=(",", ":"), default=str) + "\n")
            return
        self._rows.row(*event_cells(ev))
