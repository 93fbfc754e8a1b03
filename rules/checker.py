"""Resolve macros and lists in a condition, check fields, operators and types.

The result is a *checked* tree whose comparisons carry the field's access kind and
constants already converted to the field's type (ints, frozensets, CIDR ranges,
compiled regexes), ready for code generation and for evt.type analysis.
"""
from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import re2

from rules import ast
from rules.errors import (Position, RuleLoadError, RuleTypeError, UnknownNameError,
                          UnsupportedError)
from rules.falco_fields import FALCO_ONLY_EVENT_TYPES, is_falco_only
from rules.fields import EVENT_TYPES, FIELDS_BY_NAME, FieldSpec
from rules.parser import LIST_OPS
from rules.source import SourceText

STRING_OPS = frozenset({"=", "!=", "in", "intersects", "pmatch", "contains", "icontains",
                        "startswith", "endswith", "glob", "regex", "exists"})
NUMBER_OPS = frozenset({"=", "!=", "<", "<=", ">", ">=", "in", "intersects", "exists"})
BOOL_OPS = frozenset({"=", "!=", "exists"})
IP_OPS = STRING_OPS
NET_OPS = frozenset({"=", "!=", "in", "intersects", "exists"})
UNSUPPORTED_OPS = frozenset({"bcontains", "bstartswith"})
MAX_EXPANDED_DEPTH = 60
#: Caps that stop macro/list "billion laughs" from hanging the loader.
MAX_EXPANDED_NODES = 50_000
MAX_LIST_VALUES = 200_000


# --------------------------------------------------------------------------- checked tree
@dataclass(frozen=True)
class CAnd:
    items: tuple


@dataclass(frozen=True)
class COr:
    items: tuple


@dataclass(frozen=True)
class CNot:
    item: Any


@dataclass(frozen=True)
class CConst:
    value: bool


@dataclass(frozen=True, eq=False)
class CCmp:
    """A checked comparison.

    ``access``: "direct" (event[field]), "index" (element of a list field), "any" (any
    element of a list field), "label" (a key of k8s.pod.labels), "labels" (any "k:v" item),
    "either" (any of ``sources``), ``scalar_type`` the type of each compared value.
    ``const`` is the converted operand (value, frozenset, tuple of ranges, regex).
    """

    field: str
    arg: str | None
    op: str
    const: Any
    access: str
    sources: tuple[str, ...]
    scalar_type: str
    text: str  # the comparison as written, for messages
    position: Position | None = None
    values: tuple = ()  # raw literal values (index analysis)


CNode = CAnd | COr | CNot | CConst | CCmp


@dataclass
class MacroDef:
    name: str
    node: ast.Node
    source: SourceText
    position: Position | None = None


@dataclass
class CheckContext:
    """Names visible to a condition and where to record unsupported features."""

    macros: Mapping[str, MacroDef] = field(default_factory=dict)
    lists: Mapping[str, list[str]] = field(default_factory=dict)
    unsupported: list[UnsupportedError] = field(default_factory=list)
    used_macros: set[str] = field(default_factory=set)
    used_lists: set[str] = field(default_factory=set)


# --------------------------------------------------------------------------- helpers
def did_you_mean(name: str, candidates) -> str:
    """`did you mean X?` for the closest candidate, or ''."""
    best = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"did you mean {best[0]}?" if best else ""


def canonical_ip(text: str) -> str:
    """Canonical text of an IP address, as the sensor writes it (IPv4-mapped as ::ffff:a.b.c.d)."""
    addr = ipaddress.ip_address(text.strip())
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return f"::ffff:{addr.ipv4_mapped}"
    return str(addr)


def parse_net(text: str) -> tuple[int, int, int]:
    """A CIDR (or plain address) as (ip version, first, last) integers."""
    net = ipaddress.ip_network(text.strip(), strict=False)
    return (net.version, int(net.network_address), int(net.broadcast_address))


def glob_to_regex(pattern: str) -> str:
    """A shell glob as an RE2 pattern (``*`` also crosses ``/``, as Falco's glob)."""
    out, i, n = ["(?s)"], 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            j = pattern.find("]", i + 1 if i < n and pattern[i] in "!^" else i)
            if j < 0:
                out.append(re2.escape("["))
                continue
            body = pattern[i:j]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j + 1
        else:
            out.append(re2.escape(ch))
    return "".join(out)


def compile_re2(pattern: str):
    """Compile with RE2 (linear time); raises re2.error for what RE2 cannot run."""
    options = re2.Options()
    options.log_errors = False
    return re2.compile(pattern, options)


def unquote_item(item: Any) -> str:
    """A list item as a value: surrounding quotes (Falco style '"a b"') removed."""
    text = str(item).strip() if not isinstance(item, str) else item.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


# --------------------------------------------------------------------------- checker
class Checker:
    """Expand and check one condition (macros are expanded recursively)."""

    def __init__(self, ctx: CheckContext) -> None:
        self.ctx = ctx
        self.stack: list[str] = []
        self.nodes = 0
        self.values = 0

    def check(self, node: ast.Node, source: SourceText) -> CNode:
        return self._node(node, source, 0)

    def _pos(self, source: SourceText, offset: int) -> Position | None:
        return source.position(offset)

    def _node(self, node: ast.Node, source: SourceText, depth: int) -> CNode:
        if depth > MAX_EXPANDED_DEPTH:
            raise RuleLoadError("condition nested too deeply (after expanding macros)",
                                self._pos(source, getattr(node, "offset", 0)))
        self.nodes += 1
        if self.nodes > MAX_EXPANDED_NODES:
            raise RuleLoadError(f"condition too large after expanding macros (more than "
                                f"{MAX_EXPANDED_NODES} terms)",
                                self._pos(source, getattr(node, "offset", 0)))
        if isinstance(node, ast.And):
            return CAnd(tuple(self._node(n, source, depth + 1) for n in node.items))
        if isinstance(node, ast.Or):
            return COr(tuple(self._node(n, source, depth + 1) for n in node.items))
        if isinstance(node, ast.Not):
            return CNot(self._node(node.item, source, depth + 1))
        if isinstance(node, ast.Const):
            return CConst(node.value)
        if isinstance(node, ast.MacroRef):
            return self._macro(node, source, depth)
        return self._compare(node, source)

    def _macro(self, node: ast.MacroRef, source: SourceText, depth: int) -> CNode:
        macro = self.ctx.macros.get(node.name)
        if macro is None:
            if node.name in self.ctx.lists:
                raise UnknownNameError(f"{node.name} is a list, not a macro; use it as "
                                       f"'field in ({node.name})'", self._pos(source, node.offset))
            raise UnknownNameError(f"unknown macro {node.name}", self._pos(source, node.offset),
                                   hint=did_you_mean(node.name, self.ctx.macros))
        if node.name in self.stack:
            cycle = " -> ".join(self.stack + [node.name])
            raise RuleLoadError(f"macro cycle: {cycle}", self._pos(source, node.offset))
        self.ctx.used_macros.add(node.name)
        self.stack.append(node.name)
        try:
            return self._node(macro.node, macro.source, depth + 1)
        finally:
            self.stack.pop()

    # -- comparisons --------------------------------------------------------------
    def _compare(self, node: ast.Compare, source: SourceText) -> CNode:
        pos = self._pos(source, node.offset)
        name = node.field
        full = name + (f"[{node.arg}]" if node.arg is not None else "")
        spec = FIELDS_BY_NAME.get(name)
        if spec is None:
            if is_falco_only(name):
                self.ctx.unsupported.append(UnsupportedError(
                    f"unsupported field {full}", pos, feature=full))
                return CConst(False)
            raise UnknownNameError(f"unknown field {full}", pos,
                                   hint=did_you_mean(name, FIELDS_BY_NAME))
        if node.arg is not None and not spec.arg:
            raise RuleTypeError(f"{name} takes no [argument]", pos)
        if spec.arg == "key" and not node.arg:
            raise RuleTypeError(f"{name} needs a key: {name}[KEY]", pos)
        if node.op in UNSUPPORTED_OPS:
            self.ctx.unsupported.append(UnsupportedError(
                f"unsupported operator {node.op}", self._pos(source, node.op_offset),
                feature=node.op))
            return CConst(False)
        access, sources, scalar_type = _access(spec, node.arg, pos)
        allowed = {"str": STRING_OPS, "int": NUMBER_OPS, "port": NUMBER_OPS,
                   "bool": BOOL_OPS, "ip": IP_OPS, "net": NET_OPS}[scalar_type]
        if node.op not in allowed:
            raise RuleTypeError(f"operator {node.op} does not apply to {full} "
                                f"({_type_name(scalar_type)})", self._pos(source, node.op_offset))
        raw = self._operand_values(node, source)
        if name == "evt.type":
            for text, offset in raw:
                if text not in EVENT_TYPES and text not in FALCO_ONLY_EVENT_TYPES:
                    raise UnknownNameError(f"unknown event type {text}",
                                           self._pos(source, offset),
                                           hint=did_you_mean(text, EVENT_TYPES))
        const = self._convert(node, raw, scalar_type, full, source)
        return CCmp(name, node.arg, node.op, const, access, sources, scalar_type,
                    f"{full} {node.op}" + (f" {_show(raw)}" if node.operand is not None else ""),
                    pos, tuple(v for v, _ in raw))

    def _operand_values(self, node: ast.Compare, source: SourceText) -> list[tuple[str, int]]:
        """The operand's values (lists expanded) with the offset of the text they came from."""
        operand = node.operand
        if operand is None:
            return []
        if isinstance(operand, ast.Value):
            return [(operand.text, operand.offset)]
        out: list[tuple[str, int]] = []
        if operand.bare and operand.items[0].text not in self.ctx.lists:
            name = operand.items[0].text
            raise UnknownNameError(f"unknown list {name}", self._pos(source, operand.offset),
                                   hint=did_you_mean(name, self.ctx.lists) or
                                   "write literal values in parentheses: (a, b)")
        for item in operand.items:
            if not item.quoted and item.text in self.ctx.lists:
                for value in self._expand_list(item.text, [], source, item.offset):
                    out.append((value, item.offset))
            else:
                out.append((item.text, item.offset))
        return out

    def _expand_list(self, name: str, stack: list[str], source: SourceText, offset: int):
        if name in stack:
            raise RuleLoadError(f"list cycle: {' -> '.join(stack + [name])}",
                                self._pos(source, offset))
        self.ctx.used_lists.add(name)
        for item in self.ctx.lists[name]:
            self.values += 1
            if self.values > MAX_LIST_VALUES:
                raise RuleLoadError(f"list {name} too large after expanding nested lists "
                                    f"(more than {MAX_LIST_VALUES} values)",
                                    self._pos(source, offset))
            raw = item if isinstance(item, str) else str(item)
            if raw in self.ctx.lists and raw != name:
                yield from self._expand_list(raw, stack + [name], source, offset)
            else:
                yield unquote_item(raw)

    def _convert(self, node: ast.Compare, raw: list[tuple[str, int]], scalar_type: str,
                 full: str, source: SourceText) -> Any:
        op = node.op
        if op == "exists":
            return None
        values = []
        for text, offset in raw:
            values.append(self._scalar(text, scalar_type, full, op, source, offset))
        if op in LIST_OPS:
            if op == "pmatch":
                if scalar_type != "str":
                    raise RuleTypeError(f"pmatch needs a path field, not {full}",
                                        self._pos(source, node.op_offset))
                prefixes = [v.rstrip("/") or "/" for v in values]
                return (frozenset(prefixes),
                        tuple(p if p.endswith("/") else p + "/" for p in prefixes))
            if scalar_type == "net":
                return tuple(values)
            return frozenset(values)
        value = values[0]
        if op == "icontains":
            return value.lower()
        if op in ("glob", "regex"):
            pattern = glob_to_regex(value) if op == "glob" else value
            try:
                compiled = compile_re2(pattern)
            except re2.error as exc:
                detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) \
                    else str(exc)
                raise RuleTypeError(f"{op} pattern {value!r} is not a valid linear-time "
                                    f"(RE2) expression: {detail}",
                                    self._pos(source, raw[0][1])) from None
            return compiled.fullmatch
        if scalar_type == "net":
            return (value,)
        return value

    def _scalar(self, text: str, scalar_type: str, full: str, op: str, source: SourceText,
                offset: int) -> Any:
        pos = self._pos(source, offset)
        if scalar_type in ("int", "port"):
            try:
                return int(text, 0) if text.lower().startswith(("0x", "-0x")) else int(text)
            except ValueError:
                raise RuleTypeError(f"{full} is numeric; {text!r} is not a number", pos) from None
        if scalar_type == "bool":
            low = text.lower()
            if low not in ("true", "false"):
                raise RuleTypeError(f"{full} is true/false; {text!r} is neither", pos)
            return low == "true"
        if scalar_type == "ip" and op in ("=", "!=", "in", "intersects"):
            try:
                return canonical_ip(text)
            except ValueError:
                hint = "use fd.net/fd.snet/fd.cnet/... for CIDRs" if "/" in text else ""
                raise RuleTypeError(f"{full} is an IP address; {text!r} is not one", pos,
                                    hint=hint) from None
        if scalar_type == "net":
            try:
                return parse_net(text)
            except ValueError:
                raise RuleTypeError(f"{full} takes CIDRs; {text!r} is not a network", pos) \
                    from None
        return text


def _access(spec: FieldSpec, arg: str | None, pos: Position | None) -> tuple[str, tuple, str]:
    """How a field is read: (access kind, source fields, type of each compared value)."""
    name = spec.name
    if spec.any_of:
        return ("either" if len(spec.any_of) > 1 else "direct", spec.any_of,
                "net" if spec.cidr else spec.type)
    if spec.type == "list":
        if arg is None:
            return "any", (name,), spec.arg_type
        try:
            index = int(arg)
        except ValueError:
            raise RuleTypeError(f"{name}[{arg}]: the index must be a number", pos) from None
        if index < 0:
            raise RuleTypeError(f"{name}[{arg}]: the index must be >= 0", pos)
        if index == 0:
            return "direct", ("proc.name" if name == "proc.aname" else "proc.pid",), spec.arg_type
        return "index", (name, str(index - 1)), spec.arg_type
    if spec.key_of:
        return "label", (spec.key_of, arg or ""), "str"
    if spec.type == "dict":
        return "labels", (name,), "str"
    return "direct", (name,), spec.type


def _type_name(t: str) -> str:
    return {"str": "text", "int": "a number", "port": "a port number", "bool": "true/false",
            "ip": "an IP address", "net": "a network (CIDR)"}[t]


def _show(raw: list[tuple[str, int]]) -> str:
    if len(raw) == 1:
        return raw[0][0]
    return "(" + ", ".join(v for v, _ in raw) + ")"


def check_condition(node: ast.Node, source: SourceText, ctx: CheckContext) -> CNode:
    """Expand macros/lists and type-check ``node``. Unsupported features go to ``ctx``."""
    return Checker(ctx).check(node, source)


CheckFn = Callable[[ast.Node, SourceText, CheckContext], CNode]
