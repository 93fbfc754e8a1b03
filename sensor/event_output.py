"""Printing events: a readable table on a terminal, one JSON object per line otherwise."""
from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, TextIO

from rules.event import expanded

_COLUMNS = f"{'TIME':<15} {'EVENT':<14} {'PID':>7} {'PROCESS':<16} {'CONTAINER':<12} DETAIL"


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


def format_event_line(ev: Mapping[str, Any]) -> str:
    """One table row for a terminal."""
    t = ev.get("evt.time", 0)
    clock = time.strftime("%H:%M:%S", time.localtime(t / 1e9)) + f".{(t // 1_000_000) % 1000:03d}"
    return (
        f"{clock:<15} {str(ev.get('evt.type', '?')):<14} {ev.get('proc.pid', '?'):>7} "
        f"{str(ev.get('proc.name', '?'))[:16]:<16} {str(ev.get('container.id', '?'))[:12]:<12} "
        f"{_detail(ev)}"
    )


class EventPrinter:
    """Writes events to a stream as a table (tty) or JSON lines."""

    def __init__(self, stream: TextIO, as_json: bool) -> None:
        self.stream = stream
        self.as_json = as_json
        self._header_done = False

    def __call__(self, ev: Mapping[str, Any]) -> None:
        if self.as_json:
            self.stream.write(json.dumps(expanded(ev), separators=(",", ":"), default=str) + "\n")
            return
        if not self._header_done:
            self.stream.write(_COLUMNS + "\n")
            self._header_done = True
        self.stream.write(format_event_line(ev) + "\n")
