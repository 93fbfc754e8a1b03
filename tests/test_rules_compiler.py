"""Condition language: every operator (true and false), precedence, typing, errors."""
from __future__ import annotations

import pytest

from rules.compiler import compile_condition
from rules.errors import (RuleSyntaxError, RuleTypeError, RulesError, UnknownNameError,
                          UnsupportedError)

EVT = {
    "evt.type": "connect", "evt.num": 7, "evt.rawres": 0, "evt.res": "SUCCESS",
    "proc.name": "curl", "proc.cmdline": "curl -s http://Example.com/x", "proc.args": "-s x",
    "proc.exepath": "/usr/bin/curl", "proc.aname": ["bash", "sshd", "systemd"],
    "proc.apid": [100, 50, 1], "proc.pid": 200, "user.uid": 1000,
    "fd.cip": "10.0.0.5", "fd.cport": 40000, "fd.sip": "93.184.216.34", "fd.sport": 443,
    "fd.lip": "10.0.0.5", "fd.lport": 40000, "fd.rip": "93.184.216.34", "fd.rport": 443,
    "fd.l4proto": "tcp", "fd.connected": True, "fd.typechar": "4",
    "k8s.pod.labels": {"app": "web", "tier": "front"}, "container.id": "abcdef123456",
}


def ok(cond: str, event: dict = EVT, **kw) -> bool:
    return compile_condition(cond, **kw)(event)


@pytest.mark.parametrize("cond,expected", [
    ("proc.name = curl", True), ("proc.name = wget", False),
    ("proc.name == curl", True), ("proc.name == wget", False),
    ("proc.name != wget", True), ("proc.name != curl", False),
    ("fd.sport < 444", True), ("fd.sport < 443", False),
    ("fd.sport <= 443", True), ("fd.sport <= 442", False),
    ("fd.sport > 442", True), ("fd.sport > 443", False),
    ("fd.sport >= 443", True), ("fd.sport >= 444", False),
    ("proc.name in (wget, curl)", True), ("proc.name in (wget, nc)", False),
    ("proc.aname intersects (sshd, x)", True), ("proc.aname intersects (x, y)", False),
    ("proc.exepath pmatch (/usr/bin, /opt)", True), ("proc.exepath pmatch (/usr/b, /opt)", False),
    ("proc.cmdline contains http://", True), ("proc.cmdline contains ftp://", False),
    ("proc.cmdline icontains EXAMPLE.COM", True), ("proc.cmdline icontains example.org", False),
    ("proc.exepath startswith /usr/", True), ("proc.exepath startswith /opt/", False),
    ("proc.exepath endswith /curl", True), ("proc.exepath endswith /wget", False),
    ("proc.exepath glob '/usr/*/cu?l'", True), ("proc.exepath glob '/opt/*'", False),
    ("proc.cmdline regex 'curl -s http://[A-Za-z]+\\.com/.*'", True),
    ("proc.cmdline regex 'curl'", False),  # regex must match the whole value
    ("fd.sip exists", True), ("container.name exists", False),
    ("fd.connected = true", True), ("fd.connected = false", False),
])
def test_operator(cond: str, expected: bool) -> None:
    assert ok(cond) is expected


@pytest.mark.parametrize("cond,expected", [
    ("fd.snet in (rfc_1918)", False), ("fd.cnet in (rfc_1918)", True),
    ("fd.net = 93.184.0.0/16", True), ("fd.net != 93.184.0.0/16", False),
    ("fd.lnet = 10.0.0.0/8", True), ("fd.rnet = 10.0.0.0/8", False),
    ("fd.net = '127.0.0.1/8'", False),  # host bits allowed, as Falco's lists have
    ("fd.ip = 10.0.0.5", True), ("fd.ip = 93.184.216.34", True), ("fd.ip = 1.1.1.1", False),
    ("fd.ip != 0.0.0.0", True), ("fd.ip != 10.0.0.5", False),
    ("fd.port = 40000", True), ("fd.port = 443", True), ("fd.port in (1, 2)", False),
    ("fd.sip = '93.184.216.34'", True), ("fd.sip in (1.1.1.1)", False),
])
def test_network_fields(cond: str, expected: bool) -> None:
    assert ok(cond, lists={"rfc_1918": ['"10.0.0.0/8"', '"172.16.0.0/12"']}) is expected


def test_ipv6_and_mapped_addresses_match_networks() -> None:
    event = {"fd.sip": "::ffff:10.1.2.3", "fd.cip": "fd00::1"}
    assert ok("fd.snet = 10.0.0.0/8", event)
    assert ok("fd.cnet = fc00::/7", event)
    assert not ok("fd.cnet = 10.0.0.0/8", event)
    assert ok("fd.sip = '::ffff:10.1.2.3'", event)


@pytest.mark.parametrize("cond,expected", [
    ("proc.aname = sshd", True), ("proc.aname = curl", False),  # any ancestor, not self
    ("proc.aname[0] = curl", True), ("proc.aname[1] = bash", True),
    ("proc.aname[2] = sshd", True), ("proc.aname[3] startswith sys", True),
    ("proc.aname[4] exists", False), ("proc.apid[1] = 100", True), ("proc.apid[0] = 200", True),
    ("proc.aname != zsh", True), ("proc.aname != sshd", False),
    ("k8s.pod.label[app] = web", True), ("k8s.pod.label[app] = db", False),
    ("k8s.pod.label[none] exists", False), ("k8s.pod.labels contains tier:front", True),
])
def test_ancestors_and_labels(cond: str, expected: bool) -> None:
    assert ok(cond) is expected


@pytest.mark.parametrize("cond,expected", [
    ("proc.name = curl or proc.name = x and proc.name = y", True),    # and binds tighter
    ("(proc.name = curl or proc.name = x) and proc.name = y", False),
    ("not proc.name = x and proc.name = curl", True),                 # not binds tightest
    ("not (proc.name = curl and fd.sport = 1)", True),
    ("not proc.name = curl or fd.sport = 443", True),
    ("not not proc.name = curl", True),
])
def test_precedence(cond: str, expected: bool) -> None:
    assert ok(cond) is expected


def test_missing_field_makes_comparisons_false_and_their_negation_true() -> None:
    pred = compile_condition("proc.name != curl")
    assert pred({}) is False
    assert compile_condition("not proc.name = curl")({}) is True
    assert compile_condition("fd.sport > 1")({}) is False
    assert compile_condition("fd.net != 10.0.0.0/8")({}) is False


def test_values_of_the_wrong_type_in_the_event_do_not_raise() -> None:
    assert compile_condition("proc.name contains a")({"proc.name": 5}) is False
    assert compile_condition("fd.sport > 1")({"fd.sport": "x"}) is False


def test_macros_lists_and_list_in_list() -> None:
    lists = {"inner": ["b", '"c d"'], "outer": ["a", "inner"]}
    macros = {"m": "proc.name in (outer)"}
    assert ok("m", {"proc.name": "c d"}, macros=macros, lists=lists)
    assert ok("m", {"proc.name": "a"}, macros=macros, lists=lists)
    assert not ok("m", {"proc.name": "inner"}, macros=macros, lists=lists)
    assert ok("proc.name in outer", {"proc.name": "b"}, lists=lists)  # bare list name
    assert not ok("proc.name in ('outer')", {"proc.name": "a"}, lists=lists)  # quoted: literal


def test_empty_list_never_matches() -> None:
    assert not ok("proc.name in (empty)", lists={"empty": []})
    assert ok("not proc.name in (empty)", lists={"empty": []})


def test_quoted_strings_and_escapes() -> None:
    assert ok('proc.cmdline = "curl -s http://Example.com/x"')
    assert ok("proc.cmdline contains 'Example.com'")
    assert ok(r'proc.name = "c\"url"', {"proc.name": 'c"url'})
    assert ok("evt.dir = <", {"evt.dir": "<"})


@pytest.mark.parametrize("cond,error,fragment", [
    ("fd.sport = https", RuleTypeError, "fd.sport is numeric; 'https' is not a number"),
    ("fd.connected = yes", RuleTypeError, "true/false"),
    ("fd.sport contains 4", RuleTypeError, "operator contains does not apply to fd.sport"),
    ("proc.name > 3", RuleTypeError, "operator > does not apply"),
    ("fd.sip = 10.0.0.0/8", RuleTypeError, "use fd.net"),
    ("fd.snet in (nonsense)", RuleTypeError, "takes CIDRs"),
    ("proc.name regex '(a)\\1'", RuleTypeError, "RE2"),
    ("proc.aname[x] = a", RuleTypeError, "index must be a number"),
    ("proc.name[1] = a", RuleTypeError, "takes no [argument]"),
    ("proc.nmae = curl", UnknownNameError, "did you mean proc.name?"),
    ("evt.type = conect", UnknownNameError, "unknown event type conect (did you mean connect?)"),
    ("spawned_proces", UnknownNameError, "did you mean spawned_process?"),
    ("proc.name in shell_binarie", UnknownNameError, "did you mean shell_binaries?"),
    ("proc.name = ", RuleSyntaxError, "expected a value"),
    ("(proc.name = a", RuleSyntaxError, "expected ')'"),
    ("proc.name = a b", RuleSyntaxError, "unexpected 'b'"),
    ("proc.name = 'a", RuleSyntaxError, "unterminated string"),
    ("proc.name", RuleSyntaxError, "needs an operator"),
    ("", RuleSyntaxError, "empty condition"),
    ("and", RuleSyntaxError, "unexpected 'and'"),
    ("proc.tty = 0", UnsupportedError, "proc.tty"),
    ("evt.buffer bcontains 00", UnsupportedError, "evt.buffer"),
    ("proc.name bcontains 00", UnsupportedError, "bcontains"),
])
def test_errors(cond: str, error: type, fragment: str) -> None:
    with pytest.raises(error) as info:
        compile_condition(cond, macros={"spawned_process": "evt.type = execve"},
                          lists={"shell_binaries": ["sh"]})
    assert fragment in str(info.value)


def test_error_shows_position_line_and_caret() -> None:
    with pytest.raises(RulesError) as info:
        compile_condition("proc.name = curl and fd.sport = https")
    text = str(info.value).splitlines()
    assert text[0].startswith("<condition>:1:33: ")
    assert text[1].strip() == "proc.name = curl and fd.sport = https"
    assert text[2].index("^") - text[1].index("p") == 32


def test_macro_cycle_and_deep_nesting_are_errors() -> None:
    with pytest.raises(RulesError, match="macro cycle: a -> b -> a"):
        compile_condition("a", macros={"a": "b", "b": "a"})
    with pytest.raises(RulesError, match="nested too deeply"):
        compile_condition("(" * 100 + "proc.name = a" + ")" * 100)
