"""Loading Falco-format files: items, load order, append/override, exceptions, errors."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from rules.errors import (EnforceConfigError, RuleLoadError, RuleLoadErrors, RuleSyntaxError,
                          RuleTypeError, UnknownNameError, UnsupportedError)
from rules.loader import load_rules, load_rules_text

RULE = """
- rule: {name}
  desc: d
  condition: {cond}
  output: "{name} %proc.name"
  priority: {prio}
"""


def rule(name: str = "r", cond: str = "evt.type = execve", prio: str = "WARNING") -> str:
    return RULE.format(name=name, cond=cond, prio=prio)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def fired(rs, event: dict) -> list[str]:
    return [m.rule for m in rs.evaluate(event)]


EXEC = {"evt.type": "execve", "proc.name": "nc", "proc.pname": "bash", "user.uid": 0}


def test_macros_and_lists_defined_in_another_file_in_load_order(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", """
        - list: tools
          items: [nc, "ncat"]
        - macro: spawned
          condition: evt.type in (execve, execveat)
        """)
    b = write(tmp_path, "b.yaml", rule(cond="spawned and proc.name in (tools)"))
    rs = load_rules([a, b])
    assert fired(rs, EXEC) == ["r"]
    assert fired(rs, {**EXEC, "proc.name": "ls"}) == []


def test_directory_loads_files_sorted_by_name(tmp_path: Path) -> None:
    d = tmp_path / "rules.d"
    d.mkdir()
    write(d, "20_override.yaml", """
        - list: tools
          items: [socat]
          override:
            items: append
        """)
    write(d, "10_base.yaml", "- list: tools\n  items: [nc]\n" + rule(cond="proc.name in (tools)"))
    (d / "notes.txt").write_text("not a rules file")
    rs = load_rules([d])
    assert fired(rs, {**EXEC, "proc.name": "socat"}) == ["r"]
    assert fired(rs, EXEC) == ["r"]


def test_list_items_with_quotes_and_list_in_list() -> None:
    rs = load_rules_text("""
- list: a
  items: ['"sh -c"', "b"]
- list: all
  items: [a, '"x y"']
""" + rule(cond="proc.cmdline in (all)"))
    assert fired(rs, {"proc.cmdline": "sh -c"}) == ["r"]
    assert fired(rs, {"proc.cmdline": "x y"}) == ["r"]
    assert fired(rs, {"proc.cmdline": "a"}) == []


def test_old_style_append_for_lists_macros_and_rules() -> None:
    rs = load_rules_text("""
- list: l
  items: [a]
- list: l
  items: [b]
  append: true
- macro: m
  condition: proc.name in (l)
- macro: m
  condition: or proc.name = c
  append: true
""" + rule(cond="m") + """
- rule: r
  condition: and user.uid = 0
  append: true
""")
    for name in ("a", "b", "c"):
        assert fired(rs, {"proc.name": name, "user.uid": 0}) == ["r"], name
    assert fired(rs, {"proc.name": "a", "user.uid": 1}) == []


def test_override_append_and_replace() -> None:
    rs = load_rules_text(rule(cond="proc.name = nc") + """
- rule: r
  condition: and user.uid = 0
  priority: debug
  output: "changed %user.uid"
  override:
    condition: append
    priority: replace
    output: replace
- macro: unused
  condition: proc.name = x
- macro: unused
  condition: proc.name = y
  override:
    condition: replace
""")
    [m] = rs.evaluate(EXEC)
    assert (m.priority, m.output) == ("Debug", "changed 0")
    assert fired(rs, {**EXEC, "user.uid": 5}) == []


def test_append_condition_is_textual_as_in_falco() -> None:
    # Falco appends text: "a or b" + "and c" parses as "a or (b and c)".
    rs = load_rules_text(rule(cond="proc.name = a or proc.name = b") + """
- rule: r
  condition: and user.uid = 0
  override:
    condition: append
""")
    assert fired(rs, {"proc.name": "a", "user.uid": 5}) == ["r"]
    assert fired(rs, {"proc.name": "b", "user.uid": 5}) == []


def test_enabled_false_and_reenable() -> None:
    text = rule(name="x", cond="proc.name = nc") + "  enabled: false\n"
    rs = load_rules_text(text)
    assert fired(rs, EXEC) == [] and rs.rule("x") is not None
    rs = load_rules_text(text + "- rule: x\n  enabled: true\n")
    assert fired(rs, EXEC) == ["x"]


@pytest.mark.parametrize("prio,name", [("emergency", "Emergency"), ("ALERT", "Alert"),
                                       ("Critical", "Critical"), ("error", "Error"),
                                       ("warning", "Warning"), ("NOTICE", "Notice"),
                                       ("informational", "Informational"),
                                       ("INFO", "Informational"), ("debug", "Debug")])
def test_priority_names_and_aliases(prio: str, name: str) -> None:
    rs = load_rules_text(rule(prio=prio))
    assert rs.rules[0].priority == name


def test_exceptions_single_field_and_tuple_forms_and_appending_values() -> None:
    rs = load_rules_text("""
- list: trusted
  items: [trusted1]
- rule: r
  desc: d
  condition: evt.type = execve
  output: o
  priority: info
  exceptions:
    - name: by_name
      fields: proc.name
      comps: in
      values: [ok1, trusted]
    - name: by_pair
      fields: [proc.name, proc.pname]
      comps: [=, startswith]
      values:
        - [nc, sys]
    - name: by_list
      fields: [proc.name, user.uid]
      comps: [in, =]
      values:
        - [[a, b], 0]
        - [trusted, 7]
- rule: r
  exceptions:
    - name: by_pair
      values:
        - [nc, cron]
  override:
    exceptions: append
""")
    assert fired(rs, EXEC) == ["r"]
    for event in ({**EXEC, "proc.name": "ok1"}, {**EXEC, "proc.name": "trusted1"},
                  {**EXEC, "proc.pname": "systemd"}, {**EXEC, "proc.pname": "crond"},
                  {**EXEC, "proc.name": "b"}, {**EXEC, "proc.name": "trusted1", "user.uid": 7}):
        assert fired(rs, event) == [], event
    assert fired(rs, {**EXEC, "proc.name": "a", "user.uid": 1}) == ["r"]


def test_output_rendering() -> None:
    rs = load_rules_text("""
- rule: r
  desc: d
  condition: evt.type = connect
  output: >
    conn %fd.name by %proc.name gp=%proc.aname[2] app=%k8s.pod.label[app]
    tty=%proc.tty missing=%container.name ok=%fd.connected at %evt.time
  priority: warning
  tags: [network, T1071]
""")
    event = {"evt.type": "connect", "evt.time": 1_700_000_000_123_456_789,
             "fd.name": "1.2.3.4:5->6.7.8.9:80", "proc.name": "curl",
             "proc.aname": ["bash", "sshd"], "k8s.pod.labels": {"app": "web"},
             "fd.connected": True, "proc.exec_id": "x-1", "container.id": "host"}
    [m] = rs.evaluate(event)
    assert m.output == ("conn 1.2.3.4:5->6.7.8.9:80 by curl gp=sshd app=web tty=<NA> "
                        "missing=<NA> ok=true at 22:13:20.123456789")
    assert m.output_fields["proc.aname[2]"] == "sshd"
    assert m.output_fields["container.name"] is None
    assert m.output_fields["proc.exec_id"] == "x-1"  # context fields always added
    assert (m.tags, m.source, m.time_ns, m.priority) == (("network", "T1071"), "syscall",
                                                         1_700_000_000_123_456_789, "Warning")


def test_notes_for_engine_and_plugin_versions() -> None:
    rs = load_rules_text("""
- required_engine_version: 0.57.0
- required_plugin_versions:
    - name: container
      version: 0.4.0
""" + rule())
    assert any("required_plugin_versions ignored" in n for n in rs.notes)
    assert any("required_engine_version" in n for n in rs.notes)


def test_unsupported_rule_is_named_with_its_field_and_can_be_skipped() -> None:
    text = rule(name="uses tty", cond="evt.type = execve and proc.tty != 0") + rule(name="fine")
    with pytest.raises(UnsupportedError) as info:
        load_rules_text(text, "t.yaml")
    assert "rule 'uses tty' uses proc.tty" in str(info.value)
    assert str(info.value).startswith("t.yaml:4:")
    rs = load_rules_text(text, "t.yaml", skip_unsupported=True)
    assert rs.names == ["fine"]
    assert [(s.name, s.reasons) for s in rs.skipped] == [("uses tty", ("proc.tty",))]
    assert rs.stats["t.yaml"] == {"loaded": 1, "skipped": 1}


def test_rule_for_event_types_never_emitted_is_unsupported() -> None:
    rs = load_rules_text(rule(name="opens", cond="evt.type in (open, openat)"),
                         skip_unsupported=True)
    assert "never emits" in rs.skipped[0].reasons[0]


def test_unsupported_things_in_unused_macros_do_not_matter() -> None:
    rs = load_rules_text("- macro: m\n  condition: proc.tty != 0\n" + rule())
    assert rs.names == ["r"]


def _err(text: str) -> str:
    with pytest.raises(RuleLoadError) as info:
        load_rules_text(text, "f.yaml")
    return str(info.value)


def test_yaml_error_has_file_line_col_and_caret() -> None:
    msg = _err("- rule: r\n  desc: [unclosed\n")
    assert msg.startswith("f.yaml:3:1: invalid YAML")


def test_condition_error_points_into_a_folded_block() -> None:
    msg = _err("""- rule: r
  desc: d
  condition: >
    evt.type = execve
    and fd.sport = https
  output: o
  priority: info
""")
    first, line, caret = msg.splitlines()[:3]
    assert first.startswith("f.yaml:5:20: fd.sport is numeric")
    assert line.strip() == "and fd.sport = https"
    assert caret.index("^") == line.index("https")


@pytest.mark.parametrize("text,error,fragment", [
    ("rule: not a list", RuleSyntaxError, "YAML list"),
    ("- 42", RuleSyntaxError, "must be a mapping"),
    ("- rul: x", RuleSyntaxError, "did you mean rule?"),
    ("- rule: r\n  desc: d\n  condition: c\n  output: o\n  priority: p\n  conditon: x",
     RuleSyntaxError, "unknown key 'conditon' in rule 'r' (did you mean condition?)"),
    ("- rule: r\n  desc: d\n  condition: evt.type = execve\n  output: o", RuleSyntaxError,
     "has no priority"),
    (rule(prio="loud"), RuleSyntaxError, "unknown priority 'loud'"),
    (rule(cond="proc.nme = a"), UnknownNameError, "unknown field proc.nme (did you mean "),
    (rule(cond="spawned_proces"), UnknownNameError, "unknown macro spawned_proces"),
    ("- list: l\n  items: [a]\n  append: true", RuleLoadError, "no list by that name"),
    ("- macro: m\n  condition: a = \n", RuleSyntaxError, "'a' is not a field name"),
    ("- rule: r\n  enabled: false", RuleLoadError, "not defined earlier"),
    (rule() + "- rule: r\n  condition: x\n  override:\n    condition: merge", RuleSyntaxError,
     "append or replace"),
    (rule() + "- rule: r\n  priority: info\n  override:\n    priority: append", RuleSyntaxError,
     "cannot be overridden with append"),
    (rule(cond="evt.type = execve") + "  exceptions:\n    - name: e\n      fields: [proc.name]\n"
     "      values: [a]", RuleSyntaxError, "one per field"),
    (rule(cond="proc.name = a") + "  output: '%proc.nme'\n", RuleSyntaxError, "duplicate key"),
])
def test_load_errors(text: str, error: type, fragment: str) -> None:
    with pytest.raises(error) as info:
        load_rules_text(text, "f.yaml")
    assert fragment in str(info.value)


def test_unknown_output_field_is_an_error_with_did_you_mean() -> None:
    text = "- rule: r\n  desc: d\n  condition: evt.type = execve\n  output: '%proc.nme'\n" \
           "  priority: info\n"
    assert "unknown field %proc.nme in output (did you mean proc.name?)" in _err(text)


def test_several_errors_are_all_reported() -> None:
    with pytest.raises(RuleLoadErrors) as info:
        load_rules_text(rule(name="a", cond="proc.x = 1") + rule(name="b", cond="fd.sport = z"))
    assert len(info.value.errors) == 2
    assert "2 errors" in str(info.value)


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuleLoadError, match="no such rules file"):
        load_rules([tmp_path / "nope.yaml"])


def test_enforce_block_errors() -> None:
    base = rule(cond="evt.type = connect")
    with pytest.raises(EnforceConfigError, match="unknown enforce key 'tll'.*did you mean ttl"):
        load_rules_text(base + "  enforce:\n    action: deny\n    tll: 1m\n")
    with pytest.raises(EnforceConfigError, match=r"f.yaml:\d+:\d+: enforce.scope must be one of"):
        load_rules_text(base + "  enforce:\n    action: deny\n    scope: galaxy\n", "f.yaml")
    with pytest.raises(EnforceConfigError, match="ttl"):
        load_rules_text(base + "  enforce:\n    action: deny\n    ttl: soon\n")
    with pytest.raises(EnforceConfigError, match="action is required"):
        load_rules_text(base + "  enforce:\n    mode: audit\n")
    with pytest.raises(RuleLoadError, match="needs a network event"):
        load_rules_text(rule() + "  enforce:\n    action: deny\n")
    with pytest.raises(EnforceConfigError, match="not a CIDR"):
        load_rules_text(base + "  enforce:\n    action: deny\n    static:\n      cidrs: [x]\n")


def test_type_error_in_exception_values() -> None:
    with pytest.raises(RuleTypeError, match="fd.sport is numeric"):
        load_rules_text(rule(cond="evt.type = connect") + "  exceptions:\n    - name: e\n"
                        "      fields: [fd.sport]\n      values: [[http]]\n")


def test_output_error_points_at_the_field() -> None:
    msg = _err("- rule: r\n  desc: d\n  condition: evt.type = execve\n"
               "  output: >\n    started %proc.name by\n    %user.nam\n  priority: info\n")
    first, line, caret = msg.splitlines()[:3]
    assert first.startswith("f.yaml:6:5: unknown field %user.nam in output (did you mean")
    assert caret.index("^") == line.index("%user.nam")
