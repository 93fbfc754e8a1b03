"""Parsing of durations ("500ms", "30s", "10m") and sizes ("64KiB", "10MB") in the config."""
from __future__ import annotations

import re

from alerts.errors import AlertsConfigError

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3, None: 1}


def parse_duration(value: object, where: str, *, allow_zero: bool = True) -> float:
    """Seconds from a number (seconds) or a string such as "250ms", "30s", "10m", "1h"."""
    if isinstance(value, bool):
        raise AlertsConfigError(f"{where}: expected a duration, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise AlertsConfigError(f"{where}: expected a duration like 30s, 500ms or 10m, got {value!r}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise AlertsConfigError(f"{where}: duration must be positive, got {value!r}")
    return seconds


def parse_size(value: object, where: str) -> int:
    """Bytes from an int or a string such as "64KiB", "10MB", "1GiB"."""
    if isinstance(value, bool):
        raise AlertsConfigError(f"{where}: expected a size, got {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE_RE.match(value)):
        unit = m.group(2).lower() if m.group(2) else None
        size = int(float(m.group(1)) * _SIZE_UNITS[unit])
    else:
        raise AlertsConfigError(f"{where}: expected a size like 10MiB or 65536, got {value!r}")
    if size <= 0:
        raise AlertsConfigError(f"{where}: size must be positive, got {value!r}")
    return size


def parse_positive_int(value: object, where: str) -> int:
    """A strictly positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise AlertsConfigError(f"{where}: expected a positive integer, got {value!r}")
    return value


def parse_bool(value: object, where: str) -> bool:
    """A YAML boolean."""
    if not isinstance(value, bool):
        raise AlertsConfigError(f"{where}: expected true or false, got {value!r}")
    return value


def parse_str_list(value: object, where: str) -> tuple[str, ...]:
    """A list of strings (a single string is accepted as a one-element list)."""
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AlertsConfigError(f"{where}: expected a list of strings, got {value!r}")
    return tuple(value)
