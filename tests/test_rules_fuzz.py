"""Property tests: malformed YAML and conditions give a RulesError or a ruleset, nothing else."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.compiler import compile_condition
from rules.errors import RulesError
from rules.loader import load_rules_text

TOKENS = ["proc.name", "fd.sport", "fd.snet", "proc.aname[2]", "k8s.pod.label[app]", "evt.type",
          "=", "!=", "<", ">=", "in", "pmatch", "contains", "glob", "regex", "exists",
          "intersects", "and", "or", "not", "(", ")", ",", "'x'", '"a b', "443", "10.0.0.0/8",
          "curl", "m", "l", "[", "]", "\\", "'(a)\\1'", "bcontains", "proc.tty", "unknown.f"]
FRAGMENTS = ["- rule: r\n", "  desc: d\n", "  condition: ", "  output: %proc.name\n",
             "  priority: ", "warning\n", "- macro: m\n", "- list: l\n", "  items: [a, b]\n",
             "  append: true\n", "  override:\n    condition: append\n", "  enabled: false\n",
             "  exceptions:\n    - name: e\n      fields: [proc.name]\n      values: [[x]]\n",
             "  enforce:\n    action: deny\n", "proc.name = x\n", "evt.type = connect\n",
             "[", "{", ":", "- ", "  ", "\n", "'", '"', "&a ", "*a ", "!!python/object ", "\t"]
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
EVENT = {"evt.type": "connect", "proc.name": "curl", "fd.sport": 443, "fd.sip": "10.1.1.1",
         "proc.aname": ["a", "b"], "k8s.pod.labels": {"app": "x"}}


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=14))
def test_condition_token_soup(tokens: list[str]) -> None:
    text = " ".join(tokens)
    macros, lists = {"m": "proc.name = curl"}, {"l": ["a"]}
    try:
        pred = compile_condition(text, macros=macros, lists=lists)
    except RulesError:
        return
    result = pred(EVENT)
    assert type(result) is bool
    # a condition that compiles can be negated and combined, and they agree with it
    assert compile_condition(f"not ({text})", macros=macros, lists=lists)(EVENT) is (not result)
    assert compile_condition(f"({text}) and evt.type = connect", macros=macros,
                             lists=lists)(EVENT) is result


@FUZZ
@given(st.text(max_size=60))
def test_condition_arbitrary_text(text: str) -> None:
    try:
        compile_condition(text)
    except RulesError:
        pass


@FUZZ
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=16))
def test_yaml_fragment_soup(parts: list[str]) -> None:
    try:
        rs = load_rules_text("".join(parts), "fuzz.yaml")
    except RulesError:
        return
    rs.evaluate(EVENT)


@FUZZ
@given(st.text(max_size=120))
def test_yaml_arbitrary_text(text: str) -> None:
    try:
        load_rules_text(text, "fuzz.yaml")
    except RulesError:
        pass


def test_macro_and_list_bombs_are_errors_not_hangs() -> None:
    macros = {"m0": "proc.name = a"}
    for i in range(1, 25):
        macros[f"m{i}"] = f"(m{i - 1} or m{i - 1} or m{i - 1})"
    try:
        compile_condition("m24", macros=macros)
    except RulesError as exc:
        assert "too large" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected an error")
    lists = {"l0": ["a"] * 10}
    for i in range(1, 12):
        lists[f"l{i}"] = [f"l{i - 1}"] * 10
    try:
        compile_condition("proc.name in (l11)", lists=lists)
    except RulesError as exc:
        assert "too large" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected an error")


def test_deeply_nested_yaml_is_an_error() -> None:
    try:
        load_rules_text("- rule: " + "[" * 5000 + "]" * 5000, "deep.yaml")
    except RulesError as exc:
        assert "deep.yaml" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected an error")


COMPARISONS = ["proc.name = curl", "proc.name != curl", "fd.sport = 443", "fd.sport > 1000",
               "fd.sip in (10.1.1.1, 10.2.2.2)", "fd.snet = 10.0.0.0/8", "proc.name startswith cu",
               "proc.aname contains b", "k8s.pod.label[app] = x", "container.id exists", "m",
               "proc.name in (l)", "proc.name glob 'c*'", "evt.type = execve"]
CONDITIONS = st.recursive(
    st.sampled_from(COMPARISONS),
    lambda inner: st.one_of(st.tuples(inner, st.sampled_from(["and", "or"]), inner)
                            .map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
                            inner.map(lambda c: f"not {c}")),
    max_leaves=8)


def _truth(cond: str) -> bool:
    """The same condition evaluated by Python's own boolean logic over each comparison's
    compiled value (so and/or/not/parentheses are checked, not the comparisons)."""
    expr = cond
    for i, comp in enumerate(sorted(COMPARISONS, key=len, reverse=True)):
        expr = expr.replace(comp, f"__c{i}")
    values = {f"__c{i}": compile_condition(comp, macros={"m": "proc.name = curl"},
                                           lists={"l": ["a"]})(EVENT)
              for i, comp in enumerate(sorted(COMPARISONS, key=len, reverse=True))}
    return bool(eval(expr, {}, values))  # noqa: S307 - only our own placeholders and and/or/not


@FUZZ
@given(CONDITIONS)
def test_well_formed_conditions_follow_boolean_logic(cond: str) -> None:
    pred = compile_condition(cond, macros={"m": "proc.name = curl"}, lists={"l": ["a"]})
    assert pred(EVENT) is _truth(cond)
