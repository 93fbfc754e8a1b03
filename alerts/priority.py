"""Falco priority names, their order, and parsing of user spellings."""
from __future__ import annotations

from alerts.errors import AlertsConfigError

#: Falco's priority names, most severe first (as Falco writes them in JSON output).
PRIORITIES: tuple[str, ...] = (
    "Emergency", "Alert", "Critical", "Error", "Warning", "Notice", "Informational", "Debug",
)

_ALIASES = {name.lower(): name for name in PRIORITIES}
_ALIASES.update({"info": "Informational", "warn": "Warning", "err": "Error", "crit": "Critical",
                 "emerg": "Emergency"})

#: Severity rank: higher is more severe (Debug = 0 ... Emergency = 7).
_RANK = {name: len(PRIORITIES) - 1 - i for i, name in enumerate(PRIORITIES)}

#: Colours per priority, as falcosidekick shows them in Slack.
PRIORITY_COLOURS: dict[str, str] = {
    "Emergency": "#e20b0b", "Alert": "#ff5400", "Critical": "#ff9000", "Error": "#ffc700",
    "Warning": "#ffff00", "Notice": "#5bffb5", "Informational": "#68c2ff", "Debug": "#ccfff2",
}


def normalize_priority(value: str) -> str | None:
    """Falco's canonical name for `value` (case-insensitive, INFO/WARN accepted) or None."""
    return _ALIASES.get(str(value).strip().lower())


def parse_priority(value: object, where: str) -> str:
    """Canonical priority name, or AlertsConfigError naming `where`."""
    name = normalize_priority(str(value)) if isinstance(value, str) else None
    if name is None:
        raise AlertsConfigError(
            f"{where}: unknown priority {value!r} (expected one of {', '.join(PRIORITIES)})")
    return name


def priority_rank(name: str) -> int:
    """Severity rank of a priority name (unknown names rank as Debug)."""
    canonical = normalize_priority(name) or "Debug"
    return _RANK[canonical]
