"""Priorities in alerts: Falco's names and order come from rules.priority; colours, parsing."""
from __future__ import annotations

from alerts.errors import AlertsConfigError
from rules.priority import PRIORITIES, accepted_spellings, normalize_priority, priority_rank

__all__ = ["PRIORITIES", "PRIORITY_COLOURS", "normalize_priority", "parse_priority", "priority_rank"]

#: Colours per priority, as falcosidekick shows them in Slack.
PRIORITY_COLOURS: dict[str, str] = {
    "Emergency": "#e20b0b", "Alert": "#ff5400", "Critical": "#ff9000", "Error": "#ffc700",
    "Warning": "#ffff00", "Notice": "#5bffb5", "Informational": "#68c2ff", "Debug": "#ccfff2",
}

#: Terminal styles per priority (rich style names), most severe in bold red.
PRIORITY_STYLES: dict[str, str] = {
    "Emergency": "bold red", "Alert": "bold red", "Critical": "bold red", "Error": "red",
    "Warning": "yellow", "Notice": "cyan", "Informational": "green", "Debug": "dim",
}


def parse_priority(value: object, where: str) -> str:
    """Canonical priority name, or AlertsConfigError naming `where`."""
    name = normalize_priority(value)
    if name is None:
        raise AlertsConfigError(f"{where}: unknown priority {value!r} (expected {accepted_spellings()})")
    return name
