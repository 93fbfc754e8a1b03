"""The one grammar of durations and sizes, for config files, the CLI and rules.

Durations: a number of seconds (``90``, ``1.5``) or a number with a unit: ``ns``, ``us``,
``ms``, ``s``, ``m``, ``h``, ``d``, ``w`` (``500ms``, ``30s``, ``10m``, ``1h``, ``1d``,
``1.5h``); a space between number and unit is allowed, case is not significant.

Sizes: a number of bytes (``65536``) or a number with a unit: ``B``; decimal ``KB``,
``MB``, ``GB``, ``TB`` (powers of 1000); binary ``KiB``, ``MiB``, ``GiB``, ``TiB`` and the
short ``K``, ``M``, ``G``, ``T``, ``Ki``, ``Mi``, ``Gi``, ``Ti`` (powers of 1024).

The module lives in ``rules`` because rules (``enforce: ttl:``) need it and ``rules`` may
import neither ``sensor`` nor ``alerts``; ``alerts`` and ``sensor`` import it from here.
Errors are :class:`UnitError` (a ValueError) without a location: callers add the file
and key in their own typed error.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction

_NUMBER = r"(\d{1,30}(?:\.\d{1,30})?|\.\d{1,30})"
_DURATION = re.compile(rf"^\s*{_NUMBER}\s*([a-z]+)?\s*$", re.IGNORECASE)
_SIZE = re.compile(rf"^\s*{_NUMBER}\s*([a-z]+)?\s*$", re.IGNORECASE)
DURATION_UNITS_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                     "m": 60_000_000_000, "h": 3_600_000_000_000, "d": 86_400_000_000_000,
                     "w": 7 * 86_400_000_000_000}
SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
              "k": 1 << 10, "ki": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mi": 1 << 20,
              "mib": 1 << 20, "g": 1 << 30, "gi": 1 << 30, "gib": 1 << 30,
              "t": 1 << 40, "ti": 1 << 40, "tib": 1 << 40}
MAX_DURATION_NS = 100 * 365 * 86_400_000_000_000  # a century: anything longer is a typo
MAX_SIZE = 1 << 60
DURATION_EXAMPLES = "30s, 500ms, 10m, 1h or 1d"
SIZE_EXAMPLES = "65536, 64KiB, 10MiB or 1GB"


class UnitError(ValueError):
    """A duration or size that does not follow the grammar, or is out of range."""


def duration_ns(value: object, *, allow_zero: bool = False) -> int:
    """Nanoseconds of a duration (a number of seconds, or text such as ``"30s"``)."""
    if isinstance(value, bool):
        raise UnitError(f"expected a duration like {DURATION_EXAMPLES}, got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise UnitError(f"expected a duration like {DURATION_EXAMPLES}, got {value!r}")
        ns = int(Fraction(value) * 1_000_000_000)
    elif isinstance(value, str) and (m := _DURATION.match(value)) and \
            (m.group(2) or "s").lower() in DURATION_UNITS_NS:
        ns = int(Fraction(m.group(1)) * DURATION_UNITS_NS[(m.group(2) or "s").lower()])
    else:
        raise UnitError(f"expected a duration like {DURATION_EXAMPLES}, got {_show(value)}")
    if ns == 0 and not allow_zero:
        raise UnitError(f"duration must be more than 0, got {_show(value)}")
    if ns > MAX_DURATION_NS:
        raise UnitError(f"duration {_show(value)} is longer than 100 years")
    return ns


def parse_duration(value: object, *, allow_zero: bool = False) -> float:
    """Seconds of a duration (a number of seconds, or text such as ``"30s"``, ``"1d"``)."""
    return duration_ns(value, allow_zero=allow_zero) / 1e9


def duration_in(value: object, where: str, error: type[Exception] = UnitError, *,
                allow_zero: bool = False) -> float:
    """parse_duration for a named setting: a grammar error is raised as
    ``error("WHERE: message")``, the error type of the section or command reading it."""
    try:
        return parse_duration(value, allow_zero=allow_zero)
    except UnitError as exc:
        raise error(f"{where}: {exc}") from None


def size_in(value: object, where: str, error: type[Exception] = UnitError) -> int:
    """parse_size for a named setting, its error raised as ``error("WHERE: message")``."""
    try:
        return parse_size(value)
    except UnitError as exc:
        raise error(f"{where}: {exc}") from None


def parse_size(value: object, *, allow_zero: bool = False) -> int:
    """Bytes of a size (an integer, or text such as ``"64KiB"``, ``"10MB"``)."""
    if isinstance(value, bool) or isinstance(value, float):
        raise UnitError(f"expected a size like {SIZE_EXAMPLES}, got {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)) and \
            (m.group(2) or "b").lower() in SIZE_UNITS:
        size = int(Fraction(m.group(1)) * SIZE_UNITS[(m.group(2) or "b").lower()])
    else:
        raise UnitError(f"expected a size like {SIZE_EXAMPLES}, got {_show(value)}")
    if size < 0 or (size == 0 and not allow_zero):
        raise UnitError(f"size must be more than 0, got {_show(value)}")
    if size > MAX_SIZE:
        raise UnitError(f"size {_show(value)} is larger than {MAX_SIZE} bytes")
    return size


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
