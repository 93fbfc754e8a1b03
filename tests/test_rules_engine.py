"""The engine: every matching rule fires, evt.type index, enforcement requests."""
from __future__ import annotations

import copy
import logging

from rules.enforcement import EnforcementRequest
from rules.loader import load_rules_text

RULES = """
- rule: any connect
  desc: d
  condition: evt.type = connect
  output: o
  priority: notice
- rule: port 4444
  desc: d
  condition: fd.rport = 4444 and evt.type in (connect, sendto)
  output: o
  priority: critical
  enforce:
    action: deny
    target: remote
    scope: pod
    ttl: 30s
    max_entries: 5
- rule: root anything
  desc: d
  condition: user.uid = 0
  output: o
  priority: info
- rule: listener
  desc: d
  condition: evt.type = listen and fd.lport = 31337
  output: o
  priority: warning
  enforce:
    action: deny
    target: listen_port
    static:
      ports: [4444]
      cidrs: [203.0.113.0/24]
      protocol: tcp
      cgroups: [/netvigil/app]
"""
CONNECT = {"evt.type": "connect", "evt.time": 5, "fd.rip": "203.0.113.9", "fd.rport": 4444,
           "fd.l4proto": "tcp", "user.uid": 0}


def test_every_matching_rule_fires_in_rule_order() -> None:
    rs = load_rules_text(RULES)
    assert [m.rule for m in rs.evaluate(CONNECT)] == ["any connect", "port 4444", "root anything"]


def test_rules_are_only_tried_on_their_event_types() -> None:
    rs = load_rules_text(RULES)
    assert rs.candidates("execve") == ["root anything"]
    assert rs.candidates("sendto") == ["port 4444", "root anything"]
    assert rs.candidates("unknown") == ["root anything"]
    assert [m.rule for m in rs.evaluate({"evt.type": "execve", "user.uid": 0})] == \
        ["root anything"]
    assert [m.rule for m in rs.evaluate({"user.uid": 0})] == ["root anything"]


def test_enforcement_request_from_the_matched_event() -> None:
    rs = load_rules_text(RULES)
    matches = rs.evaluate(CONNECT)
    req = matches[1].enforcement
    assert req == EnforcementRequest("port 4444", "deny", "remote", "pod", 30.0, "audit", 5,
                                     CONNECT, ("203.0.113.9/32",), (4444,), "tcp", ())
    assert matches[0].enforcement is None


def test_listen_port_target_and_static_entries() -> None:
    rs = load_rules_text(RULES)
    [m] = rs.evaluate({"evt.type": "listen", "fd.lport": 31337, "fd.l4proto": "tcp"})
    assert (m.enforcement.target, m.enforcement.ports, m.enforcement.cidrs) == \
        ("listen_port", (31337,), ())
    [static] = rs.static_enforcements()
    assert static.event is None and static.cgroups == ("/netvigil/app",)
    assert (static.cidrs, static.ports, static.protocol, static.scope, static.ttl_s) == \
        (("203.0.113.0/24",), (4444,), "tcp", "container", 600.0)


def test_mode_override_opts_in_globally() -> None:
    rs = load_rules_text(RULES, enforce_mode_override="enforce")
    assert rs.evaluate(CONNECT)[1].enforcement.mode == "enforce"
    assert rs.static_enforcements()[0].mode == "enforce"


def test_event_without_target_gives_no_request() -> None:
    rs = load_rules_text(RULES)
    assert rs.evaluate({"evt.type": "sendto", "fd.rport": 4444})[0].enforcement is None


def test_evaluate_of_enforcing_rules_without_enforcement_is_pure(caplog) -> None:
    """No enforcement anywhere: the same matches every time, and nothing else happens."""
    rs = load_rules_text(RULES)
    event = dict(CONNECT)
    before_event, before_state = copy.deepcopy(event), dict(vars(rs))
    with caplog.at_level(logging.DEBUG):
        first = rs.evaluate(event)
        again = rs.evaluate(event)
    assert [m.rule for m in first] == ["any connect", "port 4444", "root anything"]
    assert first == again and first[1].enforcement is not None
    assert event == before_event                 # the event is not touched
    assert {k: id(v) for k, v in vars(rs).items()} == \
        {k: id(v) for k, v in before_state.items()}  # nor the rule set's state
    assert caplog.records == []                  # nothing logged, nothing submitted
    assert not hasattr(rs, "consumer") and not hasattr(rs, "set_enforcement_consumer")


def test_second_level_index_keeps_results_identical() -> None:
    text = "".join(
        f"- rule: r{i}\n  desc: d\n  condition: evt.type = execve and proc.name = p{i % 30}\n"
        f"  output: o\n  priority: info\n" for i in range(60))
    text += "- rule: all\n  desc: d\n  condition: evt.type = execve\n  output: o\n" \
            "  priority: info\n"
    rs = load_rules_text(text)
    got = [m.rule for m in rs.evaluate({"evt.type": "execve", "proc.name": "p3"})]
    assert got == ["r3", "r33", "all"]
    assert [m.rule for m in rs.evaluate({"evt.type": "execve", "proc.name": ["x"]})] == ["all"]
