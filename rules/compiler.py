"""Compile one condition to a predicate (``--where`` filters, tools, tests)."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rules.checker import CheckContext, CNode, MacroDef, check_condition
from rules.codegen import CodeGen
from rules.errors import UnsupportedError
from rules.parser import parse_condition
from rules.source import SourceText


def check_text(text: str, *, macros: Mapping[str, str | MacroDef] | None = None,
               lists: Mapping[str, Sequence[Any]] | None = None, ruleset: Any = None) -> CNode:
    """Parse, expand and type-check condition text (raises a RulesError subclass)."""
    defs: dict[str, MacroDef] = dict(getattr(ruleset, "macros", {}) or {})
    all_lists: dict[str, list[str]] = dict(getattr(ruleset, "lists", {}) or {})
    for name, value in (lists or {}).items():
        all_lists[name] = [str(v) for v in value]
    for name, value in (macros or {}).items():
        if isinstance(value, MacroDef):
            defs[name] = value
        else:
            src = SourceText.plain(str(value))
            defs[name] = MacroDef(name, parse_condition(src), src)
    source = SourceText.plain(text)
    ctx = CheckContext(defs, all_lists)
    checked = check_condition(parse_condition(source), source, ctx)
    if ctx.unsupported:
        first = ctx.unsupported[0]
        features = ", ".join(dict.fromkeys(u.feature for u in ctx.unsupported))
        raise UnsupportedError(f"netvigil does not support {features}", first.position,
                               feature=features)
    return checked


def compile_condition(text: str, *, macros: Mapping[str, str | MacroDef] | None = None,
                      lists: Mapping[str, Sequence[Any]] | None = None,
                      ruleset: Any = None) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate event -> bool for Falco condition ``text``.

    ``macros`` (name -> condition text) and ``lists`` (name -> items) add definitions;
    ``ruleset`` makes a loaded RuleSet's macros and lists visible too.
    """
    return CodeGen().predicate(check_text(text, macros=macros, lists=lists, ruleset=ruleset))
