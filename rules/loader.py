"""Load Falco-format rules files (rules, macros, lists) into a compiled RuleSet.

Files load in the order given (a directory contributes its *.yaml/*.yml files sorted by
name). Definitions are collected first (later definitions, ``append`` and ``override``
modify earlier ones, as in Falco), then every rule is expanded, checked and compiled.
"""
from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rules import ast
from rules.analysis import required_values
from rules.checker import CheckContext, MacroDef, check_condition, did_you_mean
from rules.codegen import CodeGen
from rules.engine import CompiledRule, RuleSet, SkippedRule
from rules.enforcement import MODES, EnforceSpec, parse_enforce
from rules.errors import (RuleLoadError, RuleLoadErrors, RuleSyntaxError, UnsupportedError)
from rules.exceptions import exceptions_node, validate_exception
from rules.fields import EVENT_TYPES, NETWORK_EVENT_TYPES
from rules.output import parse_output
from rules.parser import parse_condition
from rules.priority import accepted_spellings, normalize_priority
from rules.source import SourceText
from rules.yaml_items import Item, parse_items, read_items

RULE_KEYS = ("rule", "desc", "condition", "output", "priority", "tags", "enabled", "exceptions",
             "override", "append", "source", "enforce", "warn_evttypes",
             "skip-if-unknown-filter", "capture", "capture_duration")
MACRO_KEYS = ("macro", "condition", "append", "override")
LIST_KEYS = ("list", "items", "append", "override")
RULE_APPENDABLE = ("condition", "output", "desc", "tags", "exceptions")
RULE_REPLACEABLE = ("condition", "output", "desc", "priority", "tags", "exceptions", "enabled",
                    "enforce")
EXEMPT = tuple[dict[str, Any], Item, yaml.Node | None]


@dataclass
class _ListDef:
    items: list[Any]
    item: Item


@dataclass
class _MacroDef:
    condition: SourceText
    item: Item


@dataclass
class _RuleDef:
    name: str
    item: Item  # the defining item (positions, file)
    condition: SourceText | None = None
    output: tuple[str, Item] | None = None
    desc: str = ""
    priority: tuple[Any, Item] | None = None
    tags: list[str] = field(default_factory=list)
    enabled: bool = True
    exceptions: list[EXEMPT] = field(default_factory=list)
    enforce: tuple[Any, Item] | None = None
    source: str = "syscall"
    skip_unknown: bool = False


class _Collector:
    """Accumulates definitions across files, applying appends and overrides."""

    def __init__(self) -> None:
        self.lists: dict[str, _ListDef] = {}
        self.macros: dict[str, _MacroDef] = {}
        self.rules: dict[str, _RuleDef] = {}
        self.errors: list[RuleLoadError] = []
        self.notes: list[str] = []
        self.files: list[str] = []

    def add(self, item: Item) -> None:
        try:
            getattr(self, "_" + item.kind)(item)
        except RuleLoadError as exc:
            self.errors.append(exc)

    # -- item kinds -------------------------------------------------------------------
    def _required_engine_version(self, item: Item) -> None:
        v = item.name
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise RuleSyntaxError("required_engine_version must be a version", item.pos(item.kind))
        self.notes.append(f"{item.file.name}: required_engine_version {v} (netvigil implements "
                          "the Falco rule language; the version is not compared)")

    def _required_plugin_versions(self, item: Item) -> None:
        self.notes.append(f"{item.file.name}: required_plugin_versions ignored (netvigil has "
                          "no plugins; container metadata is built in)")

    def _keys(self, item: Item, allowed: tuple[str, ...]) -> None:
        for key in item.data:
            if key not in allowed:
                raise RuleSyntaxError(f"unknown key {key!r} in {item.kind} {item.name!r}",
                                      item.pos(key, at_key=True),
                                      hint=did_you_mean(key, allowed))

    def _name(self, item: Item) -> str:
        if not isinstance(item.name, str) or not item.name.strip():
            raise RuleSyntaxError(f"{item.kind} name must be non-empty text", item.pos(item.kind))
        return item.name

    def _override(self, item: Item, appendable: tuple[str, ...],
                  replaceable: tuple[str, ...]) -> dict[str, str]:
        ov = item.data.get("override")
        if ov is None:
            return {}
        if not isinstance(ov, Mapping) or not ov:
            raise RuleSyntaxError("override must map keys to append or replace",
                                  item.pos("override"))
        out = {}
        for key, how in ov.items():
            if how not in ("append", "replace"):
                raise RuleSyntaxError(f"override.{key} must be append or replace, not {how!r}",
                                      item.pos("override"))
            allowed = appendable if how == "append" else replaceable
            if key not in allowed:
                raise RuleSyntaxError(f"{key} cannot be overridden with {how} (allowed: "
                                      f"{', '.join(allowed)})", item.pos("override"))
            if key not in item.data:
                raise RuleSyntaxError(f"override lists {key} but the item has no {key} key",
                                      item.pos("override"))
            out[key] = how
        for key in item.data:
            if key not in out and key not in (item.kind, "override"):
                raise RuleSyntaxError(f"key {key!r} is not listed in override",
                                      item.pos(key, at_key=True))
        return out

    def _append_flag(self, item: Item) -> bool:
        v = item.data.get("append", False)
        if not isinstance(v, bool):
            raise RuleSyntaxError("append must be true or false", item.pos("append"))
        return v

    def _condition(self, item: Item) -> SourceText:
        v = item.data.get("condition")
        if not isinstance(v, str) or not v.strip():
            raise RuleSyntaxError(f"{item.kind} {item.name!r}: condition must be non-empty text",
                                  item.pos("condition") if "condition" in item.data
                                  else item.pos())
        return item.text("condition")

    def _list(self, item: Item) -> None:
        self._keys(item, LIST_KEYS)
        name = self._name(item)
        items = item.data.get("items", [])
        items = [] if items is None else items
        if not isinstance(items, list) or any(isinstance(i, (list, dict)) for i in items):
            raise RuleSyntaxError(f"list {name!r}: items must be a list of values",
                                  item.pos("items") if "items" in item.data else item.pos())
        items = [_scalar_text(i) for i in items]
        ov = self._override(item, ("items",), ("items",))
        append = self._append_flag(item) or ov.get("items") == "append"
        if append or ov:
            prev = self.lists.get(name)
            if prev is None:
                raise RuleLoadError(f"list {name!r} has append/override but no list by that "
                                    "name is defined earlier", item.pos(item.kind))
            prev.items = prev.items + items if append else items
            return
        self.lists[name] = _ListDef(items, item)

    def _macro(self, item: Item) -> None:
        self._keys(item, MACRO_KEYS)
        name = self._name(item)
        cond = self._condition(item)
        ov = self._override(item, ("condition",), ("condition",))
        append = self._append_flag(item) or ov.get("condition") == "append"
        if append or ov:
            prev = self.macros.get(name)
            if prev is None:
                raise RuleLoadError(f"macro {name!r} has append/override but no macro by that "
                                    "name is defined earlier", item.pos(item.kind))
            prev.condition = prev.condition.appended(cond) if append else cond
            prev.item = item if not append else prev.item
            return
        self.macros[name] = _MacroDef(cond, item)

    def _rule(self, item: Item) -> None:
        self._keys(item, RULE_KEYS)
        name = self._name(item)
        data = item.data
        ov = self._override(item, RULE_APPENDABLE, RULE_REPLACEABLE)
        prev = self.rules.get(name)
        if ov or self._append_flag(item):
            if prev is None:
                raise RuleLoadError(f"rule {name!r} has append/override but no rule by that "
                                    "name is defined earlier", item.pos(item.kind))
            if not ov:  # old style append: condition and exceptions
                ov = {k: "append" for k in ("condition", "exceptions") if k in data}
                if "enabled" in data:
                    ov["enabled"] = "replace"
            self._apply(prev, item, ov)
            return
        if prev is not None and set(data) <= {"rule", "enabled"}:
            self._apply(prev, item, {"enabled": "replace"} if "enabled" in data else {})
            return
        if set(data) <= {"rule", "enabled"}:
            raise RuleLoadError(f"rule {name!r} is not defined earlier (an item with only "
                                "rule and enabled changes an existing rule)", item.pos(item.kind))
        for key in ("condition", "output", "priority", "desc"):
            if key not in data:
                raise RuleSyntaxError(f"rule {name!r} has no {key}", item.pos(item.kind))
        rule = _RuleDef(name, item)
        self._apply(rule, item, {k: "replace" for k in RULE_REPLACEABLE if k in data})
        if "source" in data:
            rule.source = str(data["source"])
        if data.get("skip-if-unknown-filter") is True:
            rule.skip_unknown = True
        if prev is not None:
            self.notes.append(f"{item.file.name}: rule {name!r} redefined (replaces the earlier "
                              "definition)")
        self.rules[name] = rule

    def _apply(self, rule: _RuleDef, item: Item, how: dict[str, str]) -> None:
        data = item.data
        for key, mode in how.items():
            value = data[key]
            if key == "condition":
                text = self._condition(item)
                rule.condition = text if mode == "replace" or rule.condition is None \
                    else rule.condition.appended(text)
            elif key == "output":
                if not isinstance(value, str):
                    raise RuleSyntaxError("output must be text", item.pos("output"))
                if mode == "append" and rule.output is not None:
                    value = rule.output[0] + " " + value
                rule.output = (value.strip(), item)
            elif key == "desc":
                if not isinstance(value, str):
                    raise RuleSyntaxError("desc must be text", item.pos("desc"))
                rule.desc = (rule.desc + " " + value if mode == "append" else value).strip()
            elif key == "priority":
                rule.priority = (value, item)
            elif key == "tags":
                if not isinstance(value, list) or not all(isinstance(t, (str, int)) for t in value):
                    raise RuleSyntaxError("tags must be a list of words", item.pos("tags"))
                tags = [str(t) for t in value]
                rule.tags = rule.tags + [t for t in tags if t not in rule.tags] \
                    if mode == "append" else tags
            elif key == "enabled":
                if not isinstance(value, bool):
                    raise RuleSyntaxError("enabled must be true or false", item.pos("enabled"))
                rule.enabled = value
            elif key == "exceptions":
                self._exceptions(rule, item, mode)
            elif key == "enforce":
                rule.enforce = (value, item)

    def _exceptions(self, rule: _RuleDef, item: Item, mode: str) -> None:
        value = item.data["exceptions"]
        if not isinstance(value, list):
            raise RuleSyntaxError("exceptions must be a list", item.pos("exceptions"))
        node = item.nodes["exceptions"]
        subnodes = node.value if isinstance(node, yaml.SequenceNode) else []
        new: list[EXEMPT] = []
        existing = {e["name"]: j for j, (e, _, _) in enumerate(rule.exceptions)}
        for i, exc in enumerate(value):
            sub = subnodes[i] if i < len(subnodes) else None
            if mode == "append" and isinstance(exc, Mapping) and "fields" not in exc and \
                    exc.get("name") in existing:
                # Appending values to an exception defined earlier: reuse its fields/comps.
                old, old_item, old_node = rule.exceptions[existing[exc["name"]]]
                merged = validate_exception({**old, "values": exc.get("values")}, item, sub)
                new.append((merged, item, sub))
                continue
            new.append((validate_exception(exc, item, sub), item, sub))
        if mode == "replace":
            rule.exceptions = new
            return
        for exc, it, sub in new:
            for j, (old, old_item, old_node) in enumerate(rule.exceptions):
                if old["name"] == exc["name"]:
                    merged = dict(old)
                    merged["values"] = old["values"] + exc["values"]
                    rule.exceptions[j] = (merged, old_item, old_node)
                    break
            else:
                rule.exceptions.append((exc, it, sub))

    # -- compile ----------------------------------------------------------------------
    def build(self, skip_unsupported: bool, mode_override: str | None) -> RuleSet:
        macros: dict[str, MacroDef] = {}
        for name, m in self.macros.items():
            try:
                macros[name] = MacroDef(name, parse_condition(m.condition), m.condition,
                                        m.item.pos(m.item.kind))
            except RuleLoadError as exc:
                self.errors.append(exc)
        lists = {name: ldef.items for name, ldef in self.lists.items()}
        gen = CodeGen()
        compiled: list[CompiledRule] = []
        skipped: list[SkippedRule] = []
        stats: dict[str, dict[str, int]] = {f: {"loaded": 0, "skipped": 0} for f in self.files}
        for rule in self.rules.values():
            file = rule.item.file.name
            stats.setdefault(file, {"loaded": 0, "skipped": 0})
            try:
                result = self._compile(rule, macros, lists, gen, mode_override)
            except RuleLoadError as exc:
                self.errors.append(exc)
                continue
            if isinstance(result, SkippedRule):
                if skip_unsupported or rule.skip_unknown:
                    skipped.append(result)
                    stats[file]["skipped"] += 1
                else:
                    self.errors.append(UnsupportedError(
                        f"rule {rule.name!r} uses {', '.join(result.reasons)}", result.first_use,
                        feature=", ".join(result.reasons), rule=rule.name,
                        hint="not supported by netvigil; --skip-unsupported skips such rules"))
                continue
            compiled.append(result)
            stats[file]["loaded"] += 1
            if result.evt_types is None and result.enabled:
                self.notes.append(f"{file}: rule {rule.name!r} does not constrain evt.type, so "
                                  "it is tried on every event (add evt.type = ... if you can)")
        if self.errors:
            if len(self.errors) == 1:
                raise self.errors[0]
            raise RuleLoadErrors(self.errors)
        return RuleSet(compiled, skipped, list(self.notes), stats, mode_override,
                       macros=macros, lists=lists)

    def _compile(self, rule: _RuleDef, macros: dict[str, MacroDef], lists: dict[str, list],
                 gen: CodeGen, mode_override: str | None) -> CompiledRule | SkippedRule:
        item = rule.item
        assert rule.condition is not None and rule.output is not None
        node = parse_condition(rule.condition)
        scope: dict[str, MacroDef] = {}
        for i, (exc_node, exc_src) in enumerate(exceptions_node(rule.exceptions, lists)):
            key = f"exception #{i + 1} of {rule.name}"
            scope[key] = MacroDef(key, exc_node, exc_src)
            node = ast.And((node, ast.Not(ast.MacroRef(key, 0), 0)), 0) \
                if not isinstance(node, ast.And) else ast.And(
                    node.items + (ast.Not(ast.MacroRef(key, 0), 0),), node.offset)
        ctx = CheckContext(ChainMap(scope, macros), lists)
        checked = check_condition(node, rule.condition, ctx)
        reasons = list(dict.fromkeys(u.feature for u in ctx.unsupported))
        first = ctx.unsupported[0].position if ctx.unsupported else None
        evt_types = required_values(checked, "evt.type")
        if rule.source not in ("syscall",):
            reasons.append(f"source {rule.source}")
        if not reasons and evt_types is not None and not (evt_types & set(EVENT_TYPES)):
            names = ", ".join(sorted(map(str, evt_types))) or "none"
            reasons.append(f"event types netvigil never emits ({names})")
            first = item.pos("condition")
        output_text, output_item = rule.output
        raw_output = output_item.data.get("output")
        if isinstance(raw_output, str) and raw_output.strip() == output_text:
            out_src = output_item.text("output")
            lead = len(raw_output) - len(raw_output.lstrip())
            output = parse_output(output_text, lambda off: out_src.position(off + lead))
        else:  # appended output: point at the item
            output = parse_output(output_text, lambda off: output_item.pos("output"))
        if reasons:
            return SkippedRule(rule.name, item.file.name, tuple(reasons), item.pos(item.kind),
                               first or item.pos())
        prio_value, prio_item = rule.priority
        priority = normalize_priority(prio_value)
        if priority is None:
            raise RuleSyntaxError(f"rule {rule.name!r}: unknown priority {prio_value!r}",
                                  prio_item.pos("priority"),
                                  hint=f"use {accepted_spellings()}")
        enforce: EnforceSpec | None = None
        if rule.enforce is not None:
            value, eitem = rule.enforce
            enode = eitem.nodes["enforce"]
            keys = {k.value: v for k, v in enode.value} if isinstance(enode, yaml.MappingNode) \
                else {}

            def where(key: str | None, eitem: Item = eitem, keys: dict = keys):
                return eitem.node_pos(keys[key]) if key in keys else eitem.pos("enforce")
            enforce = parse_enforce(value, where)
            if evt_types is not None and not (evt_types & set(NETWORK_EVENT_TYPES)):
                raise RuleLoadError(f"rule {rule.name!r}: enforce needs a network event "
                                    "(connect, accept, listen, ...) but the condition only "
                                    f"matches {', '.join(sorted(evt_types))}", eitem.pos("enforce"))
        return CompiledRule(rule.name, rule.desc, priority, tuple(rule.tags), output,
                            rule.enabled, checked, gen.predicate(checked), evt_types, enforce,
                            item.file.name, item.pos(item.kind), rule.source)


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _expand(paths: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        path = Path(p)
        try:
            is_dir, is_file = path.is_dir(), path.is_file()
        except OSError as exc:  # EACCES on a parent: is_dir() raises it, only ENOENT is quiet
            raise RuleLoadError(f"{p}: cannot read: {exc.strerror}") from None
        if is_dir:
            try:
                found = sorted(q for q in path.iterdir()
                               if q.suffix in (".yaml", ".yml") and not q.is_dir())
            except OSError as exc:
                raise RuleLoadError(f"{p}: cannot read directory: {exc.strerror}") from None
            files.extend(found)
        elif is_file:
            files.append(path)
        else:
            raise RuleLoadError(f"{p}: no such rules file or directory")
    return files


def _check_mode(mode: str | None) -> None:
    if mode is not None and mode not in MODES:
        raise RuleLoadError(f"enforce mode override must be audit or enforce, not {mode!r}")


def load_rules(paths: Sequence[str | Path], *, skip_unsupported: bool = False,
               enforce_mode_override: str | None = None) -> RuleSet:
    """Load rules files/directories in order into a RuleSet.

    Raises RuleLoadError (file:line:col) or RuleLoadErrors (several). Rules using fields,
    operators or event types netvigil lacks are errors unless ``skip_unsupported``.
    """
    _check_mode(enforce_mode_override)
    collector = _Collector()
    for path in _expand(paths):
        collector.files.append(str(path))
        try:
            items = read_items(path, str(path))
        except RuleLoadError as exc:
            collector.errors.append(exc)
            continue
        for item in items:
            collector.add(item)
    return collector.build(skip_unsupported, enforce_mode_override)


def load_rules_text(text: str, name: str = "<rules>", *, skip_unsupported: bool = False,
                    enforce_mode_override: str | None = None) -> RuleSet:
    """Load rules from YAML text (tests, tools); ``name`` appears in messages."""
    _check_mode(enforce_mode_override)
    collector = _Collector()
    collector.files.append(name)
    try:
        items = parse_items(text, name)
    except RuleLoadError as exc:
        collector.errors.append(exc)
        items = []
    for item in items:
        collector.add(item)
    return collector.build(skip_unsupported, enforce_mode_override)
