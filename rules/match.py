"""What the engine returns for every rule that matched an event."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rules.enforcement import EnforcementRequest


@dataclass(frozen=True)
class RuleMatch:
    """One rule that matched one event (Falco alert material plus enforcement)."""

    rule: str
    priority: str
    output: str
    output_fields: dict[str, Any]
    tags: tuple[str, ...]
    source: str
    time_ns: int
    event: Mapping[str, Any]
    enforcement: EnforcementRequest | None = None
