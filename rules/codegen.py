"""Turn checked conditions into Python source, compiled once into plain functions.

A condition becomes one Python expression over ``_g``, the event's lookup of stored fields
(``Event.stored_get``, or ``get`` of any other mapping); a derived field (fd.sport, fd.name)
is read by its compiled reader from `rules.fields`, which takes a stored value first and
otherwise computes it from the stored ends. Constants (frozensets,
CIDR ranges, compiled RE2 matchers) are bound by name in the function's globals, never
spliced into the source text. A missing field makes every comparison on it false (as in
Falco), so ``not proc.name = x`` holds for an event without ``proc.name``.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from rules.checker import CAnd, CCmp, CConst, CNode, CNot, COr
from rules.event import Event
from rules.fields import FIELDS_BY_NAME, SERVER_SIDE_TYPES, field_reader

EVAL_ERRORS = (TypeError, AttributeError, ValueError)


@lru_cache(maxsize=8192)
def _ip_key(text: str) -> tuple[int, int] | None:
    """(version, integer) of an address; IPv4-mapped IPv6 counts as IPv4."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.version, int(addr)


def _innet(value: Any, nets: tuple[tuple[int, int, int], ...]) -> bool:
    if not isinstance(value, str):
        return False
    key = _ip_key(value)
    if key is None:
        return False
    version, num = key
    for v, lo, hi in nets:
        if v == version and lo <= num <= hi:
            return True
    return False


def _idx(values: Any, i: int) -> Any:
    if isinstance(values, (list, tuple)) and 0 <= i < len(values):
        return values[i]
    return None


def _lbl(labels: Any, key: str) -> Any:
    return labels.get(key) if isinstance(labels, Mapping) else None


def _lblitems(labels: Any) -> list[str] | None:
    if not isinstance(labels, Mapping):
        return None
    return [f"{k}:{v}" for k, v in labels.items()]


def _any(values: Any, pred: Callable[[Any], bool]) -> bool:
    if not isinstance(values, (list, tuple)):
        return False
    for v in values:
        if v is not None and pred(v):
            return True
    return False


def _none_of(values: Any, pred: Callable[[Any], bool]) -> bool:
    """True when some value is present and none satisfies ``pred``."""
    if not isinstance(values, (list, tuple)):
        return False
    present = [v for v in values if v is not None]
    return bool(present) and not any(pred(v) for v in present)


HELPERS: dict[str, Any] = {"_innet": _innet, "_idx": _idx, "_lbl": _lbl,
                           "_lblitems": _lblitems, "_any": _any, "_none_of": _none_of,
                           "_ERRS": EVAL_ERRORS, "_Event": Event}
#: The generated functions' first line: the stored-field lookup of the event ``e``.
_GETTER = "_g = e.stored_get if e.__class__ is _Event else e.get"


@lru_cache(maxsize=None)
def _reader(field: str) -> Callable[[Callable[[str], Any]], Any]:
    """One shared reader per derived field (so generated code binds one constant)."""
    return field_reader(field)


class CodeGen:
    """Accumulates constants and produces expression source for checked trees."""

    def __init__(self) -> None:
        self.ns: dict[str, Any] = dict(HELPERS)
        self._n = 0
        self._consts: dict[int, str] = {}

    def _fresh(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def const(self, value: Any) -> str:
        key = id(value)
        if key in self._consts and self.ns.get(self._consts[key]) is value:
            return self._consts[key]
        name = self._fresh("_k")
        self.ns[name] = value
        self._consts[key] = name
        return name

    # -- expressions ------------------------------------------------------------------
    def expr(self, node: CNode) -> str:
        if isinstance(node, CAnd):
            return "(" + " and ".join(self.expr(n) for n in node.items) + ")"
        if isinstance(node, COr):
            return "(" + " or ".join(self.expr(n) for n in node.items) + ")"
        if isinstance(node, CNot):
            return f"(not {self.expr(node.item)})"
        if isinstance(node, CConst):
            return "True" if node.value else "False"
        return self._cmp(node)

    def _read(self, field: str) -> str:
        """Expression reading one field: the stored value; for a derived field missing
        from the event, its derivation (inlined for client/server fields)."""
        spec = FIELDS_BY_NAME.get(field)
        if spec is None or spec.derive is None:
            return f"_g({field!r})"
        v = self._fresh("_v")
        if spec.by_role:
            server, client = spec.by_role
            derived = (f"(_g({server!r}) if (_g('evt.type') in {self.const(SERVER_SIDE_TYPES)} "
                       f"or _g('fd.rip') is None) else _g({client!r}))")
        else:
            derived = f"{self.const(_reader(field))}(_g)"
        return f"({v} if ({v} := _g({field!r})) is not None else {derived})"

    def _getter(self, node: CCmp) -> str:
        if node.access == "direct":
            return self._read(node.sources[0])
        if node.access == "index":
            return f"_idx(_g({node.sources[0]!r}), {int(node.sources[1])})"
        if node.access == "label":
            return f"_lbl(_g({node.sources[0]!r}), {self.const(node.sources[1])})"
        if node.access == "labels":
            return f"_lblitems(_g({node.sources[0]!r}))"
        return self._read(node.sources[0])  # "any": the list itself

    def _scalar(self, op: str, stype: str, const: Any, value: str) -> str:
        """Expression applying ``op`` to the value expression ``value`` (evaluated once)."""
        if op == "exists":
            return f"({value} is not None)"
        k = self.const(const)
        if stype == "net":
            if op == "!=":
                v = self._fresh("_v")
                return f"(({v} := {value}) is not None and not _innet({v}, {k}))"
            return f"_innet({value}, {k})"
        if op == "=":
            return f"({value} == {k})"
        if op in ("in", "intersects"):
            return f"({value} in {k})"
        v = self._fresh("_v")
        guard = f"({v} := {value}) is not None"
        if op in ("!=", "<", "<=", ">", ">="):
            return f"({guard} and {v} {op} {k})"
        if op == "contains":
            return f"({guard} and {k} in {v})"
        if op == "icontains":
            return f"({guard} and {k} in {v}.lower())"
        if op == "startswith":
            return f"({guard} and {v}.startswith({k}))"
        if op == "endswith":
            return f"({guard} and {v}.endswith({k}))"
        if op == "pmatch":
            ks, kt = self.const(const[0]), self.const(const[1])
            return f"({guard} and ({v} in {ks} or {v}.startswith({kt})))"
        if op in ("glob", "regex"):
            return f"({guard} and {k}({v}) is not None)"
        raise AssertionError(f"operator {op}")  # pragma: no cover - checker rejects it

    def _pred(self, op: str, stype: str, const: Any) -> str:
        """A named one-argument predicate for ``op`` (used for multi-valued fields)."""
        fn = eval(f"lambda _x: {self._scalar(op, stype, const, '_x')}", self.ns)  # noqa: S307
        return self.const(fn)

    def _cmp(self, node: CCmp) -> str:
        op, stype = node.op, node.scalar_type
        if node.access == "either":
            gets = [self._read(s) for s in node.sources]
            if op == "exists":
                return "(" + " or ".join(f"{g} is not None" for g in gets) + ")"
            if op == "!=":
                eq = self._pred("=", stype, node.const)
                return f"_none_of([{', '.join(gets)}], {eq})"
            return "(" + " or ".join(self._scalar(op, stype, node.const, g) for g in gets) + ")"
        if node.access in ("any", "labels"):
            values = self._getter(node)
            if op == "exists":
                return f"({values} is not None)"
            if op == "!=":
                return f"_none_of({values}, {self._pred('=', stype, node.const)})"
            return f"_any({values}, {self._pred(op, stype, node.const)})"
        return self._scalar(op, stype, node.const, self._getter(node))

    # -- functions --------------------------------------------------------------------
    def predicate(self, node: CNode) -> Callable[[Mapping], bool]:
        """One condition as a function event -> bool (errors on odd values -> False)."""
        src = (f"def _pred(e):\n    {_GETTER}\n    try:\n"
               f"        return bool({self.expr(node)})\n"
               "    except _ERRS:\n        return False\n")
        return self._define(src, "_pred")

    def matcher(self, rules: Sequence[tuple[int, str]]) -> Callable[[Mapping], list[int]]:
        """A function event -> indices of the (index, expression source) pairs that hold.

        Expressions come from :meth:`expr` of this generator (they share its constants).
        """
        lines = ["def _match(e):", f"    {_GETTER}", "    _m = []"]
        for index, expr in rules:
            lines += ["    try:", f"        if {expr}:", f"            _m.append({int(index)})",
                      "    except _ERRS:", "        pass"]
        lines.append("    return _m")
        return self._define("\n".join(lines) + "\n", "_match")

    def _define(self, src: str, name: str) -> Callable:
        code = compile(src, f"<netvigil-rules:{name}>", "exec")
        scope: dict[str, Any] = {}
        exec(code, self.ns, scope)  # noqa: S102 - our own generated source, constants by name
        return scope[name]
