"""One priority table: every spelling a rule accepts, an alert route accepts, same order."""
from __future__ import annotations

import pytest

from alerts.config import parse_alerts_config
from alerts.errors import AlertsConfigError
from rules.errors import RuleSyntaxError
from rules.loader import load_rules_text

RULE = "- rule: r\n  desc: d\n  condition: evt.type = execve\n  output: o\n  priority: {p}\n"


@pytest.mark.parametrize("spelling, name", [
    ("warn", "Warning"), ("WARNING", "Warning"), ("info", "Informational"),
    ("Informational", "Informational"), ("err", "Error"), ("crit", "Critical"),
    ("emerg", "Emergency"), ("debug", "Debug"), ("Notice", "Notice"), ("ALERT", "Alert"),
])
def test_rules_and_alert_routes_accept_the_same_spellings(spelling: str, name: str) -> None:
    assert load_rules_text(RULE.format(p=spelling)).rules[0].priority == name
    cfg = parse_alerts_config({"sinks": {"s": {"type": "stdout", "min_priority": spelling}}}, "c.yaml")
    assert cfg.sinks[0].route.min_priority == name


@pytest.mark.parametrize("spelling", ["loud", "warnings", "7"])
def test_rules_and_alert_routes_refuse_the_same_spellings(spelling: str) -> None:
    with pytest.raises(RuleSyntaxError, match="unknown priority"):
        load_rules_text(RULE.format(p=spelling))
    with pytest.raises(AlertsConfigError, match="unknown priority"):
        parse_alerts_config({"sinks": {"s": {"type": "stdout", "min_priority": spelling}}}, "c.yaml")
