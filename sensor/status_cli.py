"""`netvigil status`: the running agent at a glance (like `cilium status`), or `--json`."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from rules.command_help import add_command
from sensor.api_client import request_one, socket_option

EXAMPLES = (
    "netvigil status",
    "netvigil status --json | jq .events.lost",
    "netvigil status --socket /run/netvigil/other.sock",
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `status` to the top-level parser."""
    p = add_command(sub, "status", help="health, programs, rules, sinks, caches and losses of the running agent",
                    description="Asks the running agent over its local API socket, like `cilium "
                                "status`: health and readiness, programs attached, events and "
                                "losses, rules loaded, alerts per sink, Kubernetes caches, "
                                "enforcement entries and observers. Exit code 0 when the agent is "
                                "healthy and ready, 1 when it is not, 2 when no agent answers.",
                    examples=EXAMPLES)
    p.add_argument("--json", action="store_true", help="the full status as one JSON object")
    socket_option(p)
    p.set_defaults(func=run)


def _ok(flag: bool) -> str:
    return "[green]OK[/]" if flag else "[red]NOT OK[/]"


def render(status: Mapping[str, Any], console: Console) -> None:
    """The status as a two-column table."""
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column("what", style="bold")
    t.add_column("state")
    t.add_row("Agent", f"netvigil {status['version']} pid {status['pid']}, up {status['uptime_s']:.0f}s, "
                       f"config {status.get('config')}")
    t.add_row("Health", f"{_ok(status['healthy'])} (poll loop turned {status['heartbeat_age_s']:.1f}s ago)")
    checks = ", ".join(f"{c['name']}: {c['detail'] or ('ok' if c['ok'] else 'not ok')}" for c in status["readiness"])
    t.add_row("Ready", f"{_ok(status['ready'])} ({checks})")
    res = status.get("resources") or {}
    if res:
        t.add_row("Resources", f"CPU {res['cpu_user_s'] + res['cpu_system_s']:.1f}s (user {res['cpu_user_s']:.1f}s, "
                               f"system {res['cpu_system_s']:.1f}s), RSS {res['rss_bytes'] / 2**20:.1f} MiB, "
                               f"{res['threads']} threads")
    programs = status.get("programs") or {}
    if programs:
        t.add_row("Programs", f"{'attached' if programs['attached'] else 'NOT attached'}, ring buffer "
                              f"{programs['ring_buffer_pending']:,}/{programs['ring_buffer_bytes']:,} bytes pending")
    events = status.get("events") or {}
    if events:
        top = sorted(events["by_type"].items(), key=lambda kv: -kv[1])[:6]
        t.add_row("Events", f"{events['total']:,} decoded, lost {events['lost']:,}, decode errors "
                            f"{events['decode_errors']:,} ({', '.join(f'{k} {v:,}' for k, v in top)})")
        t.add_row("Processes", f"{status.get('processes', 0):,} live")
    rules = status.get("rules")
    t.add_row("Rules", "none (--no-rules)" if rules is None else
              f"{rules['loaded']} loaded ({rules['enabled']} enabled, {rules['skipped']} skipped) "
              f"from {len(rules['files'])} file(s)")
    alerts = status.get("alerts") or {}
    sinks = alerts.get("sinks") or {}
    t.add_row("Alerts", f"{alerts.get('raised', 0):,} raised")
    for name, s in sorted(sinks.items()):
        state = s.get("state", "?")
        t.add_row(f"  sink {name}", f"{'[green]' if state == 'ok' else '[red]'}{state}[/] "
                                    f"delivered {s.get('delivered', 0):,}, failed {s.get('failed', 0):,}, "
                                    f"spooled {s.get('spooled', 0):,}, pending {s.get('spool_pending', 0):,}"
                                    + (f", last error: {s['last_error']}" if s.get("last_error") else ""))
    k8s = status.get("kubernetes") or {}
    t.add_row("Kubernetes", str(k8s.get("status", "?")) +
              ("" if "synced" not in k8s else f", caches {'synced' if k8s['synced'] else 'NOT synced'}"))
    pods = status.get("pod_metadata") or {}
    if pods:
        t.add_row("Pod metadata", f"{pods.get('containers', 0)} containers known, "
                                  f"{pods.get('events_without_pod_metadata', 0):,} events without pod metadata")
    enf = status.get("enforcement")
    t.add_row("Enforcement", "off (--no-enforce or enforce.enabled: false)" if enf is None else
              f"{enf['entries']} entries; denied {enf['kernel'].get('denied', 0):,}, "
              f"audited {enf['kernel'].get('audited', 0):,}")
    api = status["api"]
    t.add_row("Observers", f"{api['readers']} connected, {api['dropped']:,} items dropped for slow readers")
    for q in api.get("reader_queues") or []:
        if q["queued"] or q["dropped"]:   # one that lags: how far behind, how much it lost
            t.add_row(f"  {q['name']}", f"{'[red]' if q['dropped'] else '[yellow]'}{q['queued']:,}/{q['capacity']:,} "
                                        f"queued, {q['dropped']:,} dropped[/]")
    r = status["reload"]
    t.add_row("Reloads", f"{r['successes']} ok, {r['failures']} refused"
              + (f"; last error: {r['last_error']}" if r.get("last_error") else ""))
    console.print(t)


def run(args: argparse.Namespace) -> int:
    """Print the agent's status; 1 when it is not healthy and ready."""
    status = request_one(args.socket, {"op": "status"})
    if args.json:
        print(json.dumps(status, default=str))
    else:
        render(status, Console(file=sys.stdout, highlight=False, soft_wrap=True))
    return 0 if status.get("healthy") and status.get("ready") else 1
