"""Falco community rules (corpus): what loads unchanged, what is reported unsupported."""
from __future__ import annotations

from pathlib import Path

import pytest

from rules.errors import RuleLoadErrors, UnsupportedError
from rules.loader import load_rules

# CI and developers have shared/ beside the checkout
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "falco-rules"
# file -> (rules loaded and compiled unchanged, rules skipped as unsupported)
EXPECTED = {
    "falco_rules.yaml": (8, 17),
    "falco-incubating_rules.yaml": (11, 20),
    "falco-sandbox_rules.yaml": (12, 25),
    "falco-deprecated_rules.yaml": (2, 2),
}

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="Falco corpus not present")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_counts_per_file(name: str) -> None:
    rs = load_rules([CORPUS / name], skip_unsupported=True)
    loaded, skipped = EXPECTED[name]
    assert (len(rs.rules), len(rs.skipped)) == (loaded, skipped)
    assert rs.stats[str(CORPUS / name)] == {"loaded": loaded, "skipped": skipped}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_without_skip_every_error_is_an_unsupported_rule_named_with_its_field(name: str) -> None:
    with pytest.raises(RuleLoadErrors) as info:
        load_rules([CORPUS / name])
    errors = info.value.errors
    assert len(errors) == EXPECTED[name][1]
    assert all(isinstance(e, UnsupportedError) and e.rule and e.feature for e in errors)


def test_all_files_together() -> None:
    rs = load_rules(sorted(CORPUS.glob("*.yaml")), skip_unsupported=True)
    assert len(rs.rules) == sum(v[0] for v in EXPECTED.values())
    assert len(rs.skipped) == sum(v[1] for v in EXPECTED.values())
    reasons = {s.name: s.reasons for s in rs.skipped}
    assert reasons["Terminal shell in container"] == ("proc.tty",)
    assert reasons["Change thread namespace"] == ("event types netvigil never emits (setns)",)
    assert reasons["Java Process Class File Download"] == ("evt.buffer",)


def test_loaded_falco_rules_evaluate() -> None:
    rs = load_rules([CORPUS / "falco_rules.yaml"], skip_unsupported=True)
    event = {"evt.type": "socket", "evt.dir": "<", "evt.arg.domain": "AF_PACKET",
             "container.id": "abcdef123456", "proc.name": "tcpdump", "evt.num": 3}
    [m] = rs.evaluate(event)
    assert m.rule == "Packet socket created in container" and m.priority == "Notice"
    assert "terminal=<NA>" in m.output  # Falco-only output fields render <NA>
    dup = {"evt.type": "dup2", "evt.dir": "<", "evt.rawres": 1, "fd.num": 3,
           "fd.type": "ipv4", "fd.typechar": "4", "fd.sip": "198.51.100.7", "fd.cip": "10.0.0.5",
           "fd.sport": 4444, "fd.cport": 40000, "fd.l4proto": "tcp", "fd.lip": "10.0.0.5",
           "fd.rip": "198.51.100.7", "container.id": "abcdef123456", "proc.name": "bash",
           "evt.num": 4}
    assert "Redirect STDOUT/STDIN to Network Connection in Container" in \
        [m.rule for m in rs.evaluate(dup)]
