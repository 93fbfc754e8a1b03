"""Falco priorities: names, aliases (case-insensitive) and their order."""
from __future__ import annotations

PRIORITIES = ("Emergency", "Alert", "Critical", "Error", "Warning", "Notice", "Informational",
              "Debug")
_ALIASES = {p.lower(): p for p in PRIORITIES} | {"info": "Informational"}


def normalize_priority(value: object) -> str | None:
    """Falco's name for a priority written any case (``info`` -> Informational), or None."""
    if not isinstance(value, str):
        return None
    return _ALIASES.get(value.strip().lower())


def severity(priority: str) -> int:
    """0 for Emergency ... 7 for Debug (lower is more severe)."""
    return PRIORITIES.index(priority)
