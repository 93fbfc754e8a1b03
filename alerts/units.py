"""Values of the `alerts:` section: durations and sizes (the one grammar of
rules/units.py), positive integers, booleans, lists of strings; errors name file and key."""
from __future__ import annotations

from alerts.errors import AlertsConfigError
from rules import units


def parse_duration(value: object, where: str, *, allow_zero: bool = True) -> float:
    """Seconds from a number (seconds) or a string such as "250ms", "30s", "10m", "1h", "1d"."""
    return units.duration_in(value, where, AlertsConfigError, allow_zero=allow_zero)


def parse_size(value: object, where: str) -> int:
    """Bytes from an int or a string such as "64KiB", "10MB", "1GiB"."""
    return units.size_in(value, where, AlertsConfigError)


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
