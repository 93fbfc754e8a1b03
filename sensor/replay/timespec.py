"""--since/--until values: RFC 3339 timestamps or relative ages ("2h", "30m", "1d")."""
from __future__ import annotations

import datetime as dt
import re
import time

from rules import units
from sensor.replay.errors import ReplayError

_AGO = re.compile(r"\s*ago\s*$", re.IGNORECASE)
_FRACTION = re.compile(r"\.(\d+)")


def parse_time_spec(text: str, *, now_ns: int | None = None, option: str = "--since") -> int:
    """Nanoseconds since the epoch for ``text``.

    Accepts RFC 3339 / ISO 8601 ("2026-11-21T10:00:00Z", "2026-11-21 10:00:00+01:00",
    nanosecond fractions kept; no zone = UTC), a date ("2026-11-21"), "now", or a
    relative age ("90s", "30m", "2h", "1d", "2h ago") counted back from now.
    """
    now = time.time_ns() if now_ns is None else now_ns
    s = text.strip()
    if s == "now":
        return now
    try:  # an age in the one duration grammar (rules/units.py), optionally "... ago"
        return now - units.duration_ns(_AGO.sub("", s), allow_zero=True)
    except units.UnitError:
        pass
    frac_ns = 0
    fm = _FRACTION.search(s)
    if fm and ("T" in s.upper() or " " in s):
        digits = fm.group(1)
        frac_ns = int(digits[:9].ljust(9, "0"))
        s = s[:fm.start()] + s[fm.end():]
    s = s.replace("z", "Z")
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    try:
        when = dt.datetime.fromisoformat(s)
    except ValueError:
        raise ReplayError(f"{option}: cannot read time {text!r} (use RFC 3339 like "
                          f"2026-11-21T10:00:00Z, or an age like 30m, 2h, 1d)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp()) * 1_000_000_000 + frac_ns


def format_ns(ns: int | None) -> str:
    """Short RFC 3339 (UTC, milliseconds) for messages; '?' when unknown."""
    if ns is None:
        return "?"
    secs, rem = divmod(int(ns), 1_000_000_000)
    base = dt.datetime.fromtimestamp(secs, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{rem // 1_000_000:03d}Z"
