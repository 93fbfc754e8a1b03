"""Human-readable delivery counters for `netvigil run` (exit summary and status line)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

COLUMNS = (("delivered", "delivered"), ("failed", "failed"), ("spooled", "spooled"),
           ("spool_pending", "in spool"), ("dead_lettered", "dead-lettered"),
           ("queued", "queued"), ("filtered", "filtered"))


def format_stats(stats: Mapping[str, Mapping[str, Any]],
                 noise: Mapping[str, int] | None = None) -> str:
    """A table, one row per sink (from `AlertRouter.stats()`), plus noise counters."""
    if not stats:
        return "alerts: no sinks configured"
    header = ["sink", "type", "state"] + [title for _, title in COLUMNS]
    rows = [header]
    for name, s in stats.items():
        rows.append([name, str(s.get("type", "?")), str(s.get("state", "?"))]
                    + [str(s.get(key, 0)) for key, _ in COLUMNS])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i < 3 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    for name, s in stats.items():
        if s.get("lost"):
            lines.append(f"{name}: {s['lost']} alert(s) LOST (spool and dead-letter unwritable)")
        if s.get("state") == "failing" and s.get("last_error"):
            lines.append(f"{name}: last error: {s['last_error']}")
    if noise:
        lines.append(f"noise control: {noise.get('received', 0)} received, "
                     f"{noise.get('aggregated', 0)} aggregated, "
                     f"{noise.get('rate_limited', 0)} rate limited, "
                     f"{noise.get('summaries', 0)} summary alert(s)")
    return "\n".join(lines)


def format_status(stats: Mapping[str, Mapping[str, Any]]) -> str:
    """One short line for a status bar: `slack ok 12 sent | hook FAILING 3 spooled`."""
    parts = []
    for name, s in stats.items():
        state = "FAILING" if s.get("state") == "failing" else str(s.get("state", "?"))
        part = f"{name} {state} {s.get('delivered', 0)} sent"
        if s.get("spool_pending"):
            part += f" {s['spool_pending']} spooled"
        if s.get("dead_lettered"):
            part += f" {s['dead_lettered']} dead"
        parts.append(part)
    return " | ".join(parts) if parts else "no sinks"
