"""Alert model: Falco's JSON output from a rule match."""
from __future__ import annotations

import dataclasses
import json

import pytest
from test_alerts_support import FakeMatch

from alerts.errors import AlertModelError
from alerts.model import Alert, format_time_ns, parse_time

FALCO_KEYS = ["hostname", "output", "priority", "rule", "source", "tags", "time",
              "output_fields", "uuid"]


def test_from_match_gives_falco_json_with_uuid() -> None:
    alert = Alert.from_match(FakeMatch(), "node-1")
    data = json.loads(alert.json_bytes)
    assert list(data) == FALCO_KEYS
    assert data["rule"] == "Outbound connection to C2"
    assert data["priority"] == "Warning"
    assert data["source"] == "syscall"
    assert data["hostname"] == "node-1"
    assert data["tags"] == ["network", "mitre_command_and_control"]
    assert data["time"] == "2025-11-21T04:40:00.123456789Z"
    # Falco's output line: time of day and priority, then the rendered rule output
    assert data["output"] == "04:40:00.123456789: Warning Outbound connection (proc=curl dest=203.0.113.7:4444)"
    assert len(data["uuid"]) == 36 and data["uuid"].count("-") == 4
    # typed values survive: ints stay ints
    assert data["output_fields"]["fd.rport"] == 4444
    assert data["output_fields"]["proc.pid"] == 4242


def test_context_from_event_goes_into_output_fields() -> None:
    fields = Alert.from_match(FakeMatch(), "n").output_fields
    assert fields["proc.exec_id"] == "b1d3-4242-99"
    assert fields["container.id"] == "3ad7b26ded6d"
    assert fields["k8s.pod.name"] == "web-7f9c"
    assert fields["k8s.ns.name"] == "shop"
    assert "evt.type" not in fields  # only the documented context fields are copied


def test_enforcement_and_extras_inside_output_fields() -> None:
    @dataclasses.dataclass(frozen=True)
    class Enf:
        rule: str = "r"
        action: str = "deny"
        target: str = "remote"
        scope: str = "container"
        ttl_s: float = 600.0
        mode: str = "enforce"
        cidrs: tuple = ("203.0.113.7/32",)
        ports: tuple = (4444,)
        protocol: str = "tcp"

    alert = Alert.from_match(dataclasses.replace(FakeMatch(), enforcement=Enf()), "n",
                             extras={"netvigil.enforce.result": "denied"})
    f = alert.output_fields
    assert f["netvigil.enforce.action"] == "deny"
    assert f["netvigil.enforce.mode"] == "enforce"
    assert f["netvigil.enforce.cidrs"] == ["203.0.113.7/32"]
    assert f["netvigil.enforce.result"] == "denied"
    json.loads(alert.json_bytes)  # still plain JSON


def test_priority_spellings_are_normalised() -> None:
    assert Alert.from_match(dataclasses.replace(FakeMatch(), priority="INFO"), "n").priority == "Informational"
    assert Alert.from_match(dataclasses.replace(FakeMatch(), priority="critical"), "n").priority == "Critical"


def test_json_round_trip_keeps_nanoseconds_and_uuid() -> None:
    alert = Alert.from_match(FakeMatch(), "n")
    back = Alert.from_json(alert.json_bytes)
    assert back == alert
    assert back.time_ns == FakeMatch().time_ns


def test_time_format_is_rfc3339_with_nanoseconds() -> None:
    assert format_time_ns(1_507_591_916_746_609_046) == "2017-10-09T23:31:56.746609046Z"
    assert parse_time("2017-10-09T23:31:56.746609046Z") == 1_507_591_916_746_609_046
    assert parse_time("2017-10-09T23:31:56Z") == 1_507_591_916_000_000_000


def test_garbage_is_a_typed_error() -> None:
    with pytest.raises(AlertModelError):
        Alert.from_json(b'{"rule": "x"}')
    with pytest.raises(AlertModelError):
        Alert.from_json(b"not json")
    with pytest.raises(AlertModelError):
        Alert.from_match(object(), "n")


def test_real_rule_match_class_is_accepted() -> None:
    match_mod = pytest.importorskip("rules.match")
    m = match_mod.RuleMatch(rule="R", priority="Error", output="o", output_fields={"proc.name": "sh"},
                            tags=("t",), source="syscall", time_ns=1, event={"container.id": "host"})
    alert = Alert.from_match(m, "h")
    assert alert.to_dict()["output_fields"] == {"proc.name": "sh", "container.id": "host",
                                                "netvigil.alert_id": alert.uuid}
