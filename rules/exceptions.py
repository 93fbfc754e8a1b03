"""Falco rule ``exceptions:`` (fields / comps / values) turned into a condition tree."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from rules import ast
from rules.errors import RuleLoadError, RuleSyntaxError
from rules.lexer import BINARY_WORD_OPS, SYMBOL_OPS
from rules.parser import LIST_OPS, split_field
from rules.source import Segment, SourceText
from rules.yaml_items import Item

_COMPS = set(SYMBOL_OPS) | BINARY_WORD_OPS | {"exists"}


def validate_exception(exc: Any, item: Item, node: yaml.Node | None) -> dict[str, Any]:
    """Check one exception's shape; returns it normalised (fields/comps as lists or str)."""
    pos = item.node_pos(node) if node is not None else item.pos("exceptions")
    if not isinstance(exc, Mapping) or not isinstance(exc.get("name"), str):
        raise RuleSyntaxError("each exception needs a name (and fields, comps, values)", pos)
    for key in exc:
        if key not in ("name", "fields", "comps", "values"):
            raise RuleSyntaxError(f"exception {exc['name']!r}: unknown key {key!r}", pos)
    fields = exc.get("fields")
    if isinstance(fields, str):
        comps = exc.get("comps", "in")
        if not isinstance(comps, str):
            raise RuleSyntaxError(f"exception {exc['name']!r}: with a single field, comps is "
                                  "one operator", pos)
    elif isinstance(fields, list) and fields and all(isinstance(f, str) for f in fields):
        comps = exc.get("comps", ["="] * len(fields))
        if not isinstance(comps, list) or len(comps) != len(fields):
            raise RuleSyntaxError(f"exception {exc['name']!r}: comps must list one operator "
                                  "per field", pos)
    else:
        raise RuleSyntaxError(f"exception {exc['name']!r}: fields must be a field or a list "
                              "of fields", pos)
    for comp in [comps] if isinstance(comps, str) else comps:
        if comp not in _COMPS:
            raise RuleSyntaxError(f"exception {exc['name']!r}: unknown operator {comp!r}", pos)
    values = exc.get("values", [])
    if values is None:
        values = []
    if not isinstance(values, list):
        raise RuleSyntaxError(f"exception {exc['name']!r}: values must be a list", pos)
    if isinstance(fields, list):
        for v in values:
            if not isinstance(v, list) or len(v) != len(fields):
                raise RuleSyntaxError(f"exception {exc['name']!r}: each value must be a list of "
                                      f"{len(fields)} item(s), one per field", pos)
    return {"name": exc["name"], "fields": fields, "comps": comps, "values": list(values)}


def _field(name: str, exc_name: str, source: SourceText) -> tuple[str, str | None]:
    parts = split_field(name)
    if parts is None:
        raise RuleLoadError(f"exception {exc_name!r}: {name!r} is not a field",
                            source.position(0))
    return parts


def _operand(comp: str, value: Any, lists: Mapping[str, Any]) -> ast.Value | ast.ListValue:
    if comp in LIST_OPS:
        if isinstance(value, list):
            return ast.ListValue(tuple(ast.Value(_str(v), not (isinstance(v, str) and v in lists),
                                                 0) for v in value), 0)
        text = _str(value)
        return ast.ListValue((ast.Value(text, text not in lists, 0),), 0)
    return ast.Value(_str(value), True, 0)


def _str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def exceptions_node(exceptions: list[tuple[dict[str, Any], Item, yaml.Node | None]],
                    lists: Mapping[str, Any]) -> list[tuple[ast.Node, SourceText]]:
    """One (tree, source) per exception with values; the rule adds ``and not (...)``."""
    out = []
    for exc, item, node in exceptions:
        start = (node or item.nodes.get("exceptions") or item.node).start_mark.index
        source = SourceText([Segment("", item.file, start)])
        name = exc["name"]
        branches: list[ast.Node] = []
        if isinstance(exc["fields"], str):
            field, arg = _field(exc["fields"], name, source)
            comp = "=" if exc["comps"] == "==" else exc["comps"]
            if not exc["values"]:
                continue
            if comp in LIST_OPS:
                operand = ast.ListValue(tuple(
                    ast.Value(_str(v), not (isinstance(v, str) and v in lists), 0)
                    for v in exc["values"]), 0)
                branches.append(ast.Compare(field, arg, comp, operand, 0, 0))
            else:
                for v in exc["values"]:
                    branches.append(ast.Compare(field, arg, comp, _operand(comp, v, lists), 0, 0))
        else:
            fields = [_field(f, name, source) for f in exc["fields"]]
            for tup in exc["values"]:
                cmps: list[ast.Node] = []
                for (field, arg), comp, value in zip(fields, exc["comps"], tup):
                    comp = "=" if comp == "==" else comp
                    if comp == "exists":
                        cmps.append(ast.Compare(field, arg, comp, None, 0, 0))
                    else:
                        cmps.append(ast.Compare(field, arg, comp, _operand(comp, value, lists),
                                                0, 0))
                branches.append(cmps[0] if len(cmps) == 1 else ast.And(tuple(cmps), 0))
        if branches:
            out.append((branches[0] if len(branches) == 1 else ast.Or(tuple(branches), 0),
                        source))
    return out
