"""Falco priorities: names, accepted spellings and order (the one definition; alerts uses it).

A priority is written in any case, by its Falco name or an alias (``info``, ``warn``,
``err``, ``crit``, ``emerg``), in rules (``priority:``) and in alert routes
(``min_priority:``) alike.
"""
from __future__ import annotations

#: Falco's priority names, most severe first (as Falco writes them in JSON output).
PRIORITIES: tuple[str, ...] = (
    "Emergency", "Alert", "Critical", "Error", "Warning", "Notice", "Informational", "Debug",
)
ALIASES: dict[str, str] = {"info": "Informational", "warn": "Warning", "err": "Error",
                           "crit": "Critical", "emerg": "Emergency"}
_SPELLINGS = {p.lower(): p for p in PRIORITIES} | ALIASES
#: Severity rank: higher is more severe (Debug = 0 ... Emergency = 7).
_RANK = {name: len(PRIORITIES) - 1 - i for i, name in enumerate(PRIORITIES)}


def normalize_priority(value: object) -> str | None:
    """Falco's name for a priority written any case or as an alias, or None."""
    if not isinstance(value, str):
        return None
    return _SPELLINGS.get(value.strip().lower())


def priority_rank(name: str) -> int:
    """Severity rank of a priority (higher is more severe; unknown names rank as Debug)."""
    return _RANK[normalize_priority(name) or "Debug"]


def accepted_spellings() -> str:
    """The accepted names, for error messages."""
    names = ", ".join(p.lower() for p in PRIORITIES)
    return f"{names} (any case; aliases {', '.join(ALIASES)})"
