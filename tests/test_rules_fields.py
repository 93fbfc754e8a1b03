"""The field catalogue and docs/events.md agree; every contract field is catalogued."""
from __future__ import annotations

from pathlib import Path

from rules.fields import EVENT_TYPES, FIELDS_BY_NAME, events_markdown

DOCS = Path(__file__).resolve().parent.parent / "docs" / "events.md"


def test_docs_events_md_is_generated_from_the_catalogue() -> None:
    assert DOCS.read_text() == events_markdown(), \
        "docs/events.md is stale: regenerate with rules.fields.events_markdown()"


def test_contract_fields_and_event_types_are_catalogued() -> None:
    for name in ("evt.type", "evt.time", "evt.rawres", "proc.exec_id", "proc.aname",
                 "proc.apid", "k8s.pod.labels", "fd.name", "fd.rip", "fd.name_changed",
                 "fd.net", "fd.ip", "fd.port", "container.image.repository", "thread.tid",
                 "netvigil.verdict"):
        assert name in FIELDS_BY_NAME, name
    assert {"execve", "connect", "connect_result", "dup2", "socket", "netvigil_verdict"} <= \
        set(EVENT_TYPES)
    assert FIELDS_BY_NAME["fd.sport"].type == "port"
    assert FIELDS_BY_NAME["fd.snet"].derived


# --- derived fields: stored once, computed where read -------------------------------
from rules.event import Event, expanded, stored  # noqa: E402
from rules.fields import DERIVATIONS, FIELDS  # noqa: E402
from rules.loader import load_rules, load_rules_text  # noqa: E402

ENDS = {"fd.lip": "10.0.0.5", "fd.lport": 41000, "fd.rip": "93.184.216.34", "fd.rport": 443}


def as_decoded(event: dict) -> Event:
    """The event as the sensor decodes it: every derived field left out."""
    return Event({k: v for k, v in event.items() if k not in DERIVATIONS})


def test_client_and_server_ends_follow_falco() -> None:
    out = Event({"evt.type": "connect", **ENDS})
    assert (out["fd.cip"], out["fd.cport"], out["fd.sip"], out["fd.sport"]) == \
        ("10.0.0.5", 41000, "93.184.216.34", 443)
    assert out.get("fd.name") == "10.0.0.5:41000->93.184.216.34:443"
    inbound = Event({"evt.type": "accept4", **ENDS})
    assert (inbound.get("fd.cip"), inbound.get("fd.sport")) == ("93.184.216.34", 41000)
    assert inbound["fd.name"] == "93.184.216.34:443->10.0.0.5:41000"
    listening = Event({"evt.type": "listen", "fd.lip": "0.0.0.0", "fd.lport": 8080})
    assert (listening["fd.sip"], listening["fd.sport"], listening["fd.name"]) == \
        ("0.0.0.0", 8080, "0.0.0.0:8080")
    assert "fd.cip" not in listening and listening.get("fd.cport", "none") == "none"
    assert "fd.sip" in listening and "fd.sip" not in stored(listening)  # derived, not stored
    assert "fd.name" not in Event({"evt.type": "execve"})
    assert dict(out) == expanded(out) and dict(out)["fd.sport"] == 443 and len(out) == 10
    assert stored(out) == {"evt.type": "connect", **ENDS} and out == expanded(out)


def test_a_mapping_that_stores_a_derived_field_keeps_its_value() -> None:
    rs = load_rules_text("- rule: r\n  desc: d\n  condition: evt.type = connect and fd.sport = 53\n"
                         "  output: \"to %fd.sip:%fd.sport (%fd.name)\"\n  priority: NOTICE\n")
    plain = {"evt.type": "connect", "fd.sip": "10.9.9.9", "fd.sport": 53}  # a hand-written event
    [m] = rs.evaluate(plain)
    assert m.output == "to 10.9.9.9:53 (<NA>)"
    [m] = rs.evaluate(Event({"evt.type": "connect", **ENDS, "fd.rport": 53}))
    assert m.output == "to 93.184.216.34:53 (10.0.0.5:41000->93.184.216.34:53)"
    assert m.output_fields["fd.sport"] == 53


def test_shipped_rules_match_stored_events_as_fully_expanded_ones() -> None:
    from test_rules_default import CASES, DEFAULT
    rs = load_rules([DEFAULT])
    seen = 0
    for attack, near_miss in CASES.values():
        for event in (attack, near_miss):
            full = [(m.rule, m.output, m.output_fields) for m in rs.evaluate(event)]
            assert [(m.rule, m.output, m.output_fields) for m in rs.evaluate(as_decoded(event))] == full
            seen += len(full)
    assert seen >= len(CASES)


def test_every_derived_field_says_how() -> None:
    for spec in FIELDS:
        assert bool(spec.derivation) == spec.derived, spec.name
        if spec.derive is not None:
            assert spec.sources and all(s in FIELDS_BY_NAME for s in spec.sources), spec.name
