"""What observe and the live view print for events and alerts a process controls the text of:
command lines with rich markup, newlines and escape codes are shown as text, on one row."""
from __future__ import annotations

import io
import logging

from alerts import Alert
from sensor import logging_setup, terminal
from sensor.event_output import COLUMNS, event_cells
from sensor.live_view import LiveView
from sensor.observe_cli import ObservePrinter

T_NS = 1_764_633_600_123_456_789
HOSTILE = "sh -c [/x] [bold]loud\x1b[2J\nsecond line"
EVENT = {"evt.type": "execve", "evt.time": T_NS, "proc.pid": 4242, "proc.name": "sh", "proc.exepath": "/bin/sh",
         "proc.cmdline": HOSTILE, "proc.pname": "bash", "container.id": "0123456789ab",
         "k8s.ns.name": "shop", "k8s.pod.name": "cart-1"}


def _alert() -> Alert:
    return Alert(time_ns=T_NS, rule="Shell in pod", priority="Critical",
                 output="00:00:00.123456789: Critical shell in shop/cart-1: " + HOSTILE,
                 output_fields={"proc.pid": 4242, "proc.name": "sh", "container.id": "0123456789ab",
                                "k8s.ns.name": "shop", "k8s.pod.name": "cart-1"}, hostname="node-1")


def _printed(fmt: str, *msgs: dict) -> str:
    out = io.StringIO()
    printer = ObservePrinter(out, fmt, "never")
    for msg in msgs:
        printer(msg)
    return out.getvalue()


def test_observe_table_shows_hostile_command_lines_literally_one_row_each() -> None:
    text = _printed("table", {"kind": "event", "event": EVENT}, {"kind": "alert", "alert": _alert().to_dict()})
    lines = text.splitlines()
    assert len(lines) == 3, text                     # header, the event, the alert: one line each
    assert "\x1b" not in text
    assert "[/x] [bold]loud\\x1b[2J\\nsecond line" in lines[1]
    assert lines[1].split()[1:7] == ["execve", "4242", "sh", "shop", "cart-1", "0123456789ab"]
    alert = lines[2].split()
    assert alert[1:7] == ["ALERT", "4242", "sh", "shop", "cart-1", "0123456789ab"]
    # the priority and rule once, then the output without Falco's time and priority prefix
    assert lines[2].split("0123456789ab", 1)[1].strip().startswith("Critical Shell in pod: shell in shop/cart-1: sh -c")


def test_observe_compact_lines_escape_control_characters() -> None:
    text = _printed("compact", {"kind": "event", "event": EVENT}, {"kind": "alert", "alert": _alert().to_dict()})
    lines = text.splitlines()
    assert len(lines) == 2 and "\x1b" not in text
    assert " shop/cart-1 sh(4242) execve " in lines[0] and lines[0].endswith("[bold]loud\\x1b[2J\\nsecond line")
    assert " shop/cart-1 sh(4242) ALERT Critical Shell in pod: shell in shop/cart-1: " in lines[1]


def test_live_view_alert_row_takes_namespace_and_pod_from_the_alert() -> None:
    stats = type("S", (), {"events": 10, "lost": 0, "processes": 3, "decode_errors": 0})
    console = terminal.console(io.StringIO(), "never", width=160)
    view = LiveView(console, lambda: stats)
    view.on_alert(_alert())
    text = terminal.plain_text(view.render(), width=160)
    row = next(line for line in text.splitlines() if "Shell in pod" in line)
    assert row.split()[1:7] == ["Critical", "Shell", "in", "pod", "shop", "cart-1"]
    assert "shell in shop/cart-1: sh -c [/x] [bold]loud\\x1b[2J" in row and "00:00:00.123456789" not in row
    assert "alerts Critical 1" in text


def test_log_lines_follow_a_moved_stream_and_come_back() -> None:
    old, new = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handler = logging.StreamHandler(old)
    root.addHandler(handler)
    log = logging.getLogger("netvigil.test")
    try:
        with logging_setup.streams_moved(old, new):
            log.error("during the view")
        log.error("after the view")
    finally:
        root.removeHandler(handler)
    assert "during the view" in new.getvalue() and "during the view" not in old.getvalue()
    assert "after the view" in old.getvalue() and handler.stream is old


def test_rows_line_up_within_a_narrow_terminal_and_keep_numbers_whole() -> None:
    out = io.StringIO()
    rows = terminal.StreamTable(terminal.console(out, "never", width=100), COLUMNS)
    long_line = {**EVENT, "proc.pid": 173125, "proc.cmdline": "python3 -c " + "x" * 300}
    for ev in (long_line, {**EVENT, "proc.cmdline": "sh"}):
        rows.row(*event_cells(ev))
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and all(len(line) <= 100 for line in lines), lines
    assert " 173125 " in lines[1]                        # a number is never cut
    starts = [[line.index(word) for word in ("shop", "0123")] for line in lines[1:]]
    assert starts[0] == starts[1]                         # the same columns on every row
