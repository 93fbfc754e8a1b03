"""`netvigil observe`: the running agent's events and alerts, filtered as with Hubble."""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TextIO

from alerts import Alert
from rules.command_help import add_command
from rules.units import UnitError, duration_in
from sensor import terminal
from sensor.api_client import ApiClientError, request_lines, socket_option
from sensor.event_output import COLUMNS, alert_cells, clock, event_cells

EXAMPLES = (
    "netvigil observe                                   # last 20 events and alerts",
    "netvigil observe --follow --type connect --namespace shop",
    "netvigil observe --pod shop/cart-7d9f --port 443 -o compact --follow",
    "netvigil observe --label app=cart --ip 10.0.0.0/8 --last 100",
    "netvigil observe --alerts --follow -o json | jq .rule",
    "netvigil observe --where 'fd.rport = 22 and not proc.name in (ssh, scp)' --since 10m",
    "netvigil observe --verdict deny --follow           # enforcement verdicts as they happen",
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `observe` to the top-level parser."""
    p = add_command(sub, "observe", help="watch the running agent's events and alerts (filters like hubble)",
                    description="Events and alerts of the running agent, read from its local API "
                                "socket (root only unless the agent's api.group allows yours), like "
                                "`hubble observe`. Filters of one flag are alternatives (repeat it or "
                                "separate values with commas); different flags must all match.",
                    examples=EXAMPLES)
    add = p.add_argument
    add("--type", action="append", default=[], metavar="T", help="evt.type (connect, execve, ...; repeat or comma-separate)")
    add("--pod", action="append", default=[], metavar="[NS/]NAME", help="pod name, optionally with its namespace")
    add("--namespace", action="append", default=[], metavar="NS", help="Kubernetes namespace")
    add("--label", action="append", default=[], metavar="KEY[=VALUE]", help="pod label")
    add("--process", action="append", default=[], metavar="NAME", help="proc.name or proc.exepath")
    add("--ip", action="append", default=[], metavar="IP|CIDR", help="either end of a connection")
    add("--port", action="append", default=[], type=int, metavar="PORT", help="either end of a connection")
    add("--verdict", action="append", default=[], metavar="V", help="enforcement verdict (deny, audit)")
    add("--where", metavar="COND", help="a Falco condition, e.g. 'fd.rport = 22'")
    kinds = p.add_mutually_exclusive_group()
    kinds.add_argument("--alerts", action="store_true", help="alerts only")
    kinds.add_argument("--events", action="store_true", help="events only")
    add("--last", type=int, metavar="N", help="the last N matching items from the agent's recent history "
                                             "(default 20 without --follow, 0 with it)")
    add("--since", metavar="T", help="only items newer than T: a duration (10m, 1h) or a time (RFC 3339)")
    add("-f", "--follow", action="store_true", help="keep streaming new items")
    add("-o", "--output", choices=("table", "json", "compact"), default=None,
        help="table (default on a terminal), json (default when piped), compact")
    socket_option(p)
    p.set_defaults(func=run)


def _since_ns(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return time.time_ns() - int(duration_in(text, "--since") * 1e9)
    except UnitError:  # not a duration: a time?
        pass
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1e9)
    except ValueError:
        raise ApiClientError(f"--since: expected a duration (10m, 1h) or an RFC 3339 time, got {text!r}") from None


def _split(values: list[str]) -> list[str]:
    """Repeated flags and comma-separated values alike (`--type connect,accept4`)."""
    return [v for value in values for v in value.split(",") if v]


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    """The observe request these arguments describe."""
    spec: dict[str, Any] = {"types": _split(args.type), "pods": _split(args.pod),
                            "namespaces": _split(args.namespace), "labels": args.label,
                            "processes": _split(args.process), "ips": _split(args.ip),
                            "ports": args.port, "verdicts": _split(args.verdict)}
    spec = {k: v for k, v in spec.items() if v}
    if args.where:
        spec["where"] = args.where
    since = _since_ns(args.since)
    if since is not None:
        spec["since_ns"] = since
    return {"op": "observe", "filter": spec, "events": not args.alerts, "alerts": not args.events,
            "follow": args.follow, "last": args.last}


def _where(fields: Mapping[str, Any]) -> str:
    if fields.get("k8s.pod.name"):
        return f"{fields.get('k8s.ns.name', '?')}/{fields['k8s.pod.name']}"
    return str(fields.get("container.id") or "host")


def compact_event(ev: Mapping[str, Any]) -> str:
    """`TIME WHERE PROCESS(PID) TYPE WHAT`, one short line (control characters shown escaped)."""
    what = ev.get("fd.name") or ev.get("proc.cmdline") or ""
    verdict = f" {ev['netvigil.verdict'].upper()}" if ev.get("netvigil.verdict") else ""
    return terminal.printable(f"{clock(ev.get('evt.time'))} {_where(ev)} {ev.get('proc.name', '?')}"
                              f"({ev.get('proc.pid', '?')}) {ev.get('evt.type', '?')}{verdict} {what}").rstrip()


def compact_alert(alert: Alert) -> str:
    """`TIME WHERE PROCESS(PID) ALERT Priority rule: output`, as compact_event lays out events."""
    f = alert.output_fields
    return terminal.printable(f"{clock(alert.time_ns)} {_where(f)} {f.get('proc.name', '?')}({f.get('proc.pid', '?')}) "
                              f"ALERT {alert.priority} {alert.rule}: {alert.message}")


class ObservePrinter:
    """Writes observe messages in one output format: `table` (the event columns, alerts as
    rows among them, coloured on a terminal), `json` (the agent's objects, one per line) or
    `compact` (one short plain line each)."""

    def __init__(self, stream: TextIO, fmt: str, color: str = "auto") -> None:
        self.stream = stream
        self.fmt = fmt
        self._rows = terminal.StreamTable(terminal.console(stream, color), COLUMNS) if fmt == "table" else None
        self.dropped = 0

    def __call__(self, msg: Mapping[str, Any]) -> None:
        kind = msg.get("kind")
        if kind == "dropped":
            self.dropped = int(msg.get("count", 0))
            print(f"netvigil: observe fell behind: {self.dropped} items dropped so far", file=sys.stderr)
            return
        if kind not in ("event", "alert"):
            return
        item = msg[kind]
        if self.fmt == "json":
            self.stream.write(json.dumps(item, separators=(",", ":"), default=str) + "\n")
        elif kind == "alert":
            alert = Alert.from_dict(item)
            if self._rows is not None:
                self._rows.row(*alert_cells(alert))
            else:
                self.stream.write(compact_alert(alert) + "\n")
        elif self._rows is not None:
            self._rows.row(*event_cells(item))
        else:
            self.stream.write(compact_event(item) + "\n")
        self.stream.flush()


def run(args: argparse.Namespace) -> int:
    """Print the matching items; with --follow until interrupted or the agent stops."""
    fmt = args.output or ("table" if sys.stdout.isatty() else "json")
    printer = ObservePrinter(sys.stdout, fmt, terminal.color_of(args))
    for msg in request_lines(args.socket, build_request(args), timeout=None if args.follow else 10.0):
        if msg.get("kind") == "end":
            break
        printer(msg)
    return 0
