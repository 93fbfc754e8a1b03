"""Per-sink routing: minimum priority, rule-name globs and tags to include or exclude."""
from __future__ import annotations

import fnmatch

from alerts.config import RouteConfig
from alerts.model import Alert
from alerts.priority import priority_rank


class RouteFilter:
    """Decides whether a sink takes an alert."""

    def __init__(self, route: RouteConfig) -> None:
        self._min_rank = priority_rank(route.min_priority)
        self._route = route

    @staticmethod
    def _matches_any(rule: str, patterns: tuple[str, ...]) -> bool:
        return any(rule == p or fnmatch.fnmatchcase(rule, p) for p in patterns)

    def accepts(self, alert: Alert) -> bool:
        """True if the alert passes priority, rule and tag filters."""
        r = self._route
        if priority_rank(alert.priority) < self._min_rank:
            return False
        if r.include_rules and not self._matches_any(alert.rule, r.include_rules):
            return False
        if r.exclude_rules and self._matches_any(alert.rule, r.exclude_rules):
            return False
        tags = set(alert.tags)
        if r.include_tags and not tags.intersection(r.include_tags):
            return False
        if r.exclude_tags and tags.intersection(r.exclude_tags):
            return False
        return True
