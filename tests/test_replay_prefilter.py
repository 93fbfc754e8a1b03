"""Replay skips events no rule can match without rebuilding them: same alerts, less work."""
from __future__ import annotations

from pathlib import Path

import pytest

from rules.loader import load_rules
from sensor.cli import main
from sensor.recording import Recorder
from sensor.recording.synthetic import SyntheticNode
from sensor.replay.engine import Replayer
from rules import DEFAULT_RULES_DIR

DEFAULT_RULES = DEFAULT_RULES_DIR
N_EVENTS = 6000


def _rules_text(t_mid: int) -> str:
    """Rules reading every kind of key material: numbers compared with constants (evt.num
    delta-coded, evt.time, ports), derived fields (fd.name, fd.lport, thread.tid), interned
    strings, process fields, ancestors and labels."""
    return f"""
- rule: Numbered Backend Calls
  desc: evt.num is delta-coded on disk; only its rank among the constants matters
  condition: evt.type = connect and evt.num > 2000 and evt.num <= 2600 and fd.sport in (5432, 6379)
  output: backend call %evt.num %fd.name
  priority: NOTICE
- rule: Low Client Port Accept
  desc: a raw numeric variable field
  condition: evt.type = accept4 and fd.cport < 33500 and fd.lport = 8080
  output: accept %fd.name by %proc.name
  priority: NOTICE
- rule: Late DNS From One Thread
  desc: evt.time compared with a constant; thread.tid derived from the process pid
  condition: evt.type = sendto and evt.time > {t_mid} and thread.tid = 1002
  output: dns %fd.name tid=%thread.tid
  priority: NOTICE
- rule: Connection Name Contains
  desc: fd.name is rebuilt from the four endpoint fields
  condition: evt.type = connect and fd.name contains ":4100"
  output: odd %fd.name
  priority: WARNING
- rule: Health Check Under Shim
  desc: ancestors and pod labels come from the process records
  condition: >
    evt.type = execve and proc.aname[2] = containerd-shim and k8s.pod.label[app] = web
    and proc.name = curl
  output: health check %proc.cmdline in %k8s.pod.name
  priority: INFO
- rule: Client Subnet
  desc: an interned string compared as a network
  condition: evt.type = accept4 and fd.cnet in ("10.244.2.0/28") and k8s.ns.name = shop
  output: subnet %fd.cip
  priority: INFO
"""


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> tuple[Path, list[dict], Path]:
    directory = tmp_path_factory.mktemp("rec")
    events = []
    with Recorder(directory, host="node-1", boot_id="b", version="v",
                  max_segment_bytes=60_000) as rec:
        for kind, x in SyntheticNode(seed=5, suspicious_every=300).stream(N_EVENTS):
            getattr(rec, kind)(x)
            if kind == "event":
                events.append(x)
    rules_file = directory.parent / "prefilter-rules.yaml"
    rules_file.write_text(_rules_text(events[len(events) // 2]["evt.time"]))
    return directory, events, rules_file


def _matches(directory: Path, ruleset, prefilter) -> tuple[list[tuple], Replayer]:
    r = Replayer([directory], prefilter=prefilter)
    out = [(m.rule, m.time_ns, m.output, m.output_fields, dict(m.event))
           for ev in r.events() for m in ruleset.evaluate(ev)]
    return out, r


@pytest.mark.parametrize("which", ["custom", "shipped"])
def test_prefiltered_replay_gives_the_same_alerts_and_skips_most_events(recording,
                                                                         which) -> None:
    directory, events, rules_file = recording
    ruleset = load_rules([rules_file] if which == "custom" else [DEFAULT_RULES])
    full, r_full = _matches(directory, ruleset, None)
    fast, r_fast = _matches(directory, ruleset, ruleset)
    assert fast == full
    fired = {m[0] for m in full}
    if which == "custom":
        assert fired == {r.name for r in ruleset.rules}, "every test rule must fire"
    assert len(full) >= 6
    assert r_fast.stats["events_read"] == r_full.stats["events_read"] == len(events)
    # the repeated majority is counted without being rebuilt
    assert r_fast.stats["events_prefiltered"] > 0.7 * len(events)
    assert r_fast.stats["events_selected"] + r_fast.stats["events_prefiltered"] == len(events)


def test_field_uses_tell_numeric_comparisons_from_exact_values() -> None:
    from rules.analysis import field_uses
    from rules.loader import load_rules_text

    rs = load_rules_text("""
- rule: r
  desc: d
  condition: >
    evt.type = connect and evt.num != 0 and fd.port in (80, 443)
    and proc.name startswith ng and not fd.sport > 1000
  output: x
  priority: INFO
""")
    uses = field_uses(rs.rules[0].condition)
    assert uses["evt.num"] == frozenset({0})
    assert uses["fd.sport"] == frozenset({80, 443, 1000})
    assert uses["fd.cport"] == frozenset({80, 443})
    assert uses["proc.name"] is None
    assert rs.fields_read("connect")["evt.type"] is None
    assert "fd.sport" not in rs.fields_read("execve")


def test_cli_summary_says_how_many_events_were_not_rebuilt(recording, capsys) -> None:
    directory, events, _ = recording
    assert main(["replay", str(directory), "--json"]) == 0
    _, err = capsys.readouterr()
    assert f"of {len(events):,} events (" in err
    assert "that no rule could match were counted, not rebuilt" in err


def test_a_shape_redefined_in_another_form_is_not_answered_from_its_old_form() -> None:
    """A segment may define a shape id again (definitions are repeated for robustness;
    a damaged or hand-made segment may change one): events after it are decoded, and
    prefiltered, by the new definition, not by what was cached for the old one."""
    from sensor.recording import format as fmt
    from sensor.recording.decoder import IT_EVENT, SegmentDecoder
    from rules.loader import load_rules_text

    rules = load_rules_text("""
- rule: Miner Port
  desc: test
  condition: evt.type = connect and fd.rport = 4444
  output: miner %fd.rport
  priority: WARNING
""", "t.yaml")
    fields = ["evt.type", "fd.rport", "fd.lport", "exec_id", "pid"]
    defs = [[fmt.K_FIELD, i, name, 0] for i, name in enumerate(fields)]

    def shape(rport: int) -> list:
        return [fmt.K_SHAPE, 0, [[2, fmt.C_RAW]], [[0, "connect"], [1, rport]], 0, 1, 0]

    event = [fmt.K_EVENT, 0, 1000, 0, [40000], 0]
    dec = SegmentDecoder({"created_ns": 0}, prefilter=rules)
    errors: list = []
    first = dec.decode([*defs, shape(80), [fmt.K_PROC, 0, {3: "b:1:1", 4: 1}, 0],
                        event, event, shape(80), event],
                       lambda i, exc: errors.append(exc))
    assert [i for i in first if i[0] == IT_EVENT] == [] and dec.prefiltered == 3
    second = dec.decode([shape(4444), event], lambda i, exc: errors.append(exc))
    events = [i[2] for i in second if i[0] == IT_EVENT]
    assert [e["fd.rport"] for e in events] == [4444] and rules.evaluate(events[0])
    assert errors == []
