"""Human-readable delivery counters for `netvigil run` (exit summary and status line)."""
from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

COLUMNS = (("delivered", "delivered"), ("failed", "failed"), ("spooled", "spooled"),
           ("spool_pending", "in spool"), ("dead_lettered", "dead-lettered"),
           ("queued", "queued"), ("filtered", "filtered"))
TEXT_WIDTH = 240  # plain renderings never wrap


def stats_view(stats: Mapping[str, Mapping[str, Any]],
               noise: Mapping[str, int] | None = None) -> Group:
    """A rich table, one row per sink (from `AlertRouter.stats()`), then losses, errors, noise."""
    if not stats:
        return Group(Text("alerts: no sinks configured"))
    table = Table(box=None, pad_edge=False, header_style="bold")
    for i, title in enumerate(["sink", "type", "state"] + [t for _, t in COLUMNS]):
        table.add_column(title, justify="left" if i < 3 else "right", no_wrap=True)
    for name, s in stats.items():
        state = str(s.get("state", "?"))
        table.add_row(name, str(s.get("type", "?")),
                      Text(state, style="bold red" if state == "failing" else "green"),
                      *(str(s.get(key, 0)) for key, _ in COLUMNS))
    lines: list[Any] = [table]
    for name, s in stats.items():
        if s.get("lost"):
            lines.append(Text(f"{name}: {s['lost']} alert(s) LOST (spool and dead-letter "
                              "unwritable)", style="bold red"))
        if s.get("state") == "failing" and s.get("last_error"):
            lines.append(Text(f"{name}: last error: {s['last_error']}", style="red"))
    if noise:
        lines.append(Text(f"noise control: {noise.get('received', 0)} received, "
                          f"{noise.get('aggregated', 0)} aggregated, "
                          f"{noise.get('rate_limited', 0)} rate limited, "
                          f"{noise.get('summaries', 0)} summary alert(s)"))
    return Group(*lines)


def format_stats(stats: Mapping[str, Mapping[str, Any]],
                 noise: Mapping[str, int] | None = None) -> str:
    """`stats_view` as plain text (logs, pipes)."""
    buf = io.StringIO()
    Console(file=buf, width=TEXT_WIDTH, color_system=None, force_terminal=False,
            highlight=False).print(stats_view(stats, noise))
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines())


def sink_states(stats: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, bool]]:
    """Per sink `slack ok 12 sent` (or `hook FAILING 0 sent 3 spooled`) and whether it fails."""
    parts = []
    for name, s in stats.items():
        failing = s.get("state") == "failing"
        part = f"{name} {'FAILING' if failing else s.get('state', '?')} {s.get('delivered', 0)} sent"
        if s.get("spool_pending"):
            part += f" {s['spool_pending']} spooled"
        if s.get("dead_lettered"):
            part += f" {s['dead_lettered']} dead"
        parts.append((part, failing))
    return parts


def format_status(stats: Mapping[str, Mapping[str, Any]]) -> str:
    """One short line for a status bar: `slack ok 12 sent | hook FAILING 3 spooled`."""
    parts = sink_states(stats)
    return " | ".join(p for p, _ in parts) if parts else "no sinks"
