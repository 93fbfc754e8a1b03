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
