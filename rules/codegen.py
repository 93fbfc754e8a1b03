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

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from rules.addresses import parse_address
from rules.analysis import cost
from rules.checker import CAnd, CCmp, CConst, CNode, CNot, COr
from rules.event import Event
from rules.fields import FIELDS_BY_NAME, SERVER_SIDE_TYPES, field_reader

EVAL_ERRORS = (TypeError, AttributeError, ValueError)


@lru_cache(maxsize=8192)
def _ip_key(text: str) -> tuple[int, int] | None:
    """(version, integer) of an address; IPv4-mapped IPv6 counts as IPv4."""
    addr = parse_address(text)
    return None if addr is None else (addr.version, int(addr))


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


#: Addresses each network test remembers its answer for (beyond them it recomputes).
NET_TEST_MEMORY = 4096


@lru_cache(maxsize=1024)
def net_test(nets: tuple[tuple[int, int, int], ...]) -> Callable[[Any], bool]:
    """``value -> _innet(value, nets)``, remembering answers for recent address strings
    (a pure function of its argument, so evaluation stays free of visible effects)."""
    known: dict[str, bool] = {}

    def test(value: Any) -> bool:
        if value.__class__ is not str:
            return _innet(value, nets)
        hit = known.get(value)
        if hit is None:
            hit = _innet(value, nets)
            if len(known) >= NET_TEST_MEMORY:
                known.clear()
            known[value] = hit
        return hit
    return test


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


#: "Not computed yet" for a shared sub-condition of a matcher.
_UNSET = object()
HELPERS: dict[str, Any] = {"_innet": _innet, "_idx": _idx, "_lbl": _lbl,
                           "_lblitems": _lblitems, "_any": _any, "_none_of": _none_of,
                           "_ERRS": EVAL_ERRORS, "_Event": Event, "_UNSET": _UNSET}
_UNKNOWN = object()  # a field value CodeGen.known does not hold
#: The generated functions' first line: the stored-field lookup of the event ``e``.
_GETTER = "_g = e.stored_get if e.__class__ is _Event else e.get"


@lru_cache(maxsize=None)
def _reader(field: str) -> Callable[[Callable[[str], Any]], Any]:
    """One shared reader per derived field (so generated code binds one constant)."""
    return field_reader(field)


class CodeGen:
    """Accumulates constants and produces expression source for checked trees.

    ``known`` holds field values fixed for the events the code will see (the evt.type a
    matcher is dispatched on), so derivations that depend on them fold at compile time.
    """

    def __init__(self) -> None:
        self.ns: dict[str, Any] = dict(HELPERS)
        self._n = 0
        self._consts: dict[int, str] = {}
        self._by_value: dict[Any, str] = {}
        self.known: dict[str, Any] = {}
        # Matcher generation: reads and sub-conditions held in locals, and (while
        # recording) each use of a read or sub-condition key.
        self._locals: dict[Any, str] = {}
        self._seen: list[Any] | None = None
        # stored reads every call makes (see ``matcher``): plain locals set up front
        self._hoisted: set[Any] = set()
        self._first: dict[Any, Any] = {}  # recorded key -> the first stored read it makes

    def _fresh(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def const(self, value: Any) -> str:
        key = id(value)
        if key in self._consts and self.ns.get(self._consts[key]) is value:
            return self._consts[key]
        vkey = _value_key(value)
        name = self._by_value.get(vkey) if vkey is not None else None
        if name is None:
            name = self._fresh("_k")
            self.ns[name] = value
            if vkey is not None:
                self._by_value[vkey] = name
        self._consts[key] = name
        return name

    def _node_key(self, node: CNode) -> Any:
        """A structural key: equal for sub-conditions that compute the same thing."""
        if isinstance(node, CCmp):
            return ("cmp", node.field, node.arg, node.op, self.const(node.const), node.access,
                    node.sources, node.scalar_type)
        if isinstance(node, CNot):
            return ("not", self._node_key(node.item))
        if isinstance(node, CConst):
            return ("const", node.value)
        return ("and" if isinstance(node, CAnd) else "or",
                tuple(self._node_key(n) for n in node.items))

    # -- expressions ------------------------------------------------------------------
    def expr(self, node: CNode) -> str:
        if (self._seen is None and not self._locals) or not _worth_sharing(node):
            return self._expr(node)
        key = ("sub", self._node_key(node))
        if key in self._locals:
            return self._shared(key, lambda: f"bool({self._expr(node)})")
        return self._shared(key, lambda: self._expr(node))

    def _expr(self, node: CNode) -> str:
        if isinstance(node, CAnd):
            return "(" + " and ".join(self.expr(n) for n in node.items) + ")"
        if isinstance(node, COr):
            return "(" + " or ".join(self.expr(n) for n in node.items) + ")"
        if isinstance(node, CNot):
            return f"(not {self.expr(node.item)})"
        if isinstance(node, CConst):
            return "True" if node.value else "False"
        return self._cmp(node)

    def _raw(self, field: str) -> str:
        """Expression reading one stored field."""
        return self._shared(("raw", field), lambda: f"_g({field!r})")

    def _shared(self, key: Any, text: Callable[[], str]) -> str:
        """``text()``, or, for a read or sub-condition the matcher being generated uses
        more than once, its local: computed on first use (a raise leaves it unset, so
        the next use raises too, as unshared code would)."""
        if self._seen is not None:  # recording the uses (the text is not kept)
            self._seen.append(key)
            if key in self._first:  # its second use reads the local: nothing inside runs
                return ""
            start = len(self._seen)
            out = text()
            self._first[key] = key if self._hoistable(key) else self._first_read(start)
            return out
        name = self._locals.get(key)
        if name is None:
            return text()
        if key in self._hoisted:
            return name
        if key[0] == "sub":  # a bool once computed: None stands for "not yet"
            return f"({name} if {name} is not None else ({name} := {text()}))"
        return f"({name} if {name} is not _UNSET else ({name} := {text()}))"

    def _read(self, field: str) -> str:
        """Expression reading one field: the stored value; for a derived field missing
        from the event, its derivation (inlined for client/server fields)."""
        spec = FIELDS_BY_NAME.get(field)
        if spec is None or spec.derive is None:
            return self._raw(field)
        return self._shared(("read", field), lambda: self._derived_read(field, spec))

    def _derived_read(self, field: str, spec: Any) -> str:
        v = self._fresh("_v")
        stored = self._raw(field)  # generated in evaluation order: read first
        if spec.by_role:
            server, client = spec.by_role
            evt_type = self.known.get("evt.type", _UNKNOWN)
            if evt_type is _UNKNOWN:
                side = (f"_g('evt.type') in {self.const(SERVER_SIDE_TYPES)} or "
                        f"{self._raw('fd.rip')} is None")
            elif evt_type in SERVER_SIDE_TYPES:
                side = ""
            else:
                side = f"{self._raw('fd.rip')} is None"
            derived = (f"({self._raw(server)} if ({side}) else {self._raw(client)})" if side
                       else self._raw(server))
        else:
            derived = f"{self.const(_reader(field))}(_g)"
        return f"({v} if ({v} := {stored}) is not None else {derived})"

    def _getter(self, node: CCmp) -> str:
        if node.access == "direct":
            return self._read(node.sources[0])
        if node.access == "index":
            return f"_idx({self._raw(node.sources[0])}, {int(node.sources[1])})"
        if node.access == "label":
            v, k = self._fresh("_v"), self.const(node.sources[1])
            return (f"({v}.get({k}) if ({v} := {self._raw(node.sources[0])}).__class__ is dict "
                    f"else (None if {v} is None else _lbl({v}, {k})))")
        if node.access == "labels":
            return f"_lblitems({self._raw(node.sources[0])})"
        return self._read(node.sources[0])  # "any": the list itself

    def _scalar(self, op: str, stype: str, const: Any, value: str) -> str:
        """Expression applying ``op`` to the value expression ``value`` (evaluated once)."""
        if op == "exists":
            return f"({value} is not None)"
        k = self.const(const)
        if stype == "net":
            if op == "!=":
                v, bind = self._bind(value)
                return f"({bind} is not None and not {self.const(net_test(const))}({v}))"
            return f"{self.const(net_test(const))}({value})"
        if op == "=":
            return f"({value} == {k})"
        if op in ("in", "intersects"):
            return f"({value} in {k})"
        v, bind = self._bind(value)
        guard = f"{bind} is not None"
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

    def _bind(self, value: str) -> tuple[str, str]:
        """(name, expression binding it) for a value used twice (a local needs no bind)."""
        if value.isidentifier():
            return value, value
        v = self._fresh("_v")
        return v, f"({v} := {value})"

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

    def matcher(self, rules: Sequence[tuple[int, CNode]],
                known: Mapping[str, Any] | None = None) -> Callable[[Mapping], list[int]]:
        """A function event -> indices of the (index, condition) pairs that hold, in order.

        ``known``: field values every event given to it has (see the class). A field
        or sub-condition several conditions use is computed once per event, when first
        needed (an error fails only the rules that reach it, as without sharing).
        """
        self.known = dict(known or {})
        rules = [(i, self._ordered(node)) for i, node in rules]
        try:
            self._seen = []
            heads = set()
            for _, node in rules:
                start = len(self._seen)
                self.expr(node)
                # the rule's first stored read: made on every call, by it or before it
                heads.add(self._first_read(start))
            counts: dict[Any, int] = defaultdict(int)
            for key in self._seen:
                counts[key] += 1
            self._seen = None
            for key, n in counts.items():
                if n > 1:
                    self._locals[key] = self._fresh("_s")
            # dict and Event: a stored read cannot raise, so those every call makes are
            # read once up front, and are plain locals after
            hoisted = sorted((k for k in heads if k in self._locals),
                             key=lambda k: (k[0] != "raw", self._locals[k]))
            # the lazy form: any mapping (a read may raise; then only the rules reaching
            # it fail); with nothing to read up front it is the only form
            lazy = [(i, self.expr(node)) for i, node in rules]
            lazy_src = self._match_src(lazy, *self._memo_names(), [])
            if not hoisted:
                return self._define(lazy_src, "_match")
            lazy_fn = self._deferred(lazy_src)   # compiled only if such a mapping comes
            reads = []
            for k in hoisted:  # a derived read after the stored ones (and memos) it uses
                reads.append((self._locals[k], f"_g({k[1]!r})" if k[0] == "raw" else
                              self._derived_read(k[1], FIELDS_BY_NAME[k[1]])))
                self._hoisted.add(k)
            eager = [(i, self.expr(node)) for i, node in rules]
            return self._define(self._match_src(eager, *self._memo_names(), reads, lazy_fn),
                                "_match")
        finally:
            self.known, self._locals, self._seen, self._hoisted = {}, {}, None, set()
            self._first = {}

    def _memo_names(self) -> tuple[list[str], list[str]]:
        """(locals of shared reads, locals of shared sub-conditions) set on first use."""
        items = self._locals.items()
        return ([n for k, n in items if k[0] != "sub" and k not in self._hoisted],
                [n for k, n in items if k[0] == "sub"])

    def _hoistable(self, key: Any) -> bool:
        """Whether the read ``key`` cannot raise on a dict or an Event: a stored field, or
        a client/server field where the evt.type is known (no function, no hashing)."""
        if key[0] == "raw":
            return True
        if key[0] != "read" or "evt.type" not in self.known:
            return False
        spec = FIELDS_BY_NAME.get(key[1])
        return spec is not None and bool(spec.by_role)

    def _first_read(self, start: int) -> Any:
        """The first stored read (its key) the code recorded from ``start`` on makes, in
        evaluation order (a shared read or sub-condition seen before: its own first)."""
        for key in self._seen[start:]:  # type: ignore[index]
            first = self._first.get(key)
            if first is not None:
                return first
        return None

    def _ordered(self, node: CNode) -> CNode:
        """``node`` with its top-level ``and`` flattened, repeats dropped and cheap positive
        tests first, exceptions (``not ...``) last. Exact for a whole rule: it holds iff
        every conjunct evaluates true, and an error anywhere makes it false either way."""
        if not isinstance(node, CAnd):
            return node
        items: dict[Any, CNode] = {}
        stack = list(reversed(node.items))
        while stack:
            item = stack.pop()
            if isinstance(item, CAnd):
                stack.extend(reversed(item.items))
            else:
                items.setdefault(self._node_key(item), item)
        ordered = sorted(items.values(), key=lambda n: (isinstance(n, CNot), cost(n)))
        return CAnd(tuple(ordered)) if len(ordered) > 1 else ordered[0]

    def _match_src(self, exprs: Sequence[tuple[int, str]], memos: list[str], subs: list[str],
                   reads: Sequence[tuple[str, str]], lazy: Callable | None = None) -> str:
        """Source of ``_match``: ``reads`` (local, expression: stored reads first) up front
        for a dict or an Event, any other mapping handed to ``lazy``; then each rule's test
        in order."""
        if reads:
            other = self.const(lazy)
            lines = ["def _match(e):", "    if e.__class__ is _Event:", "        _g = e.stored_get",
                     "    elif e.__class__ is dict:", "        _g = e.get",
                     "    else:", f"        return {other}(e)"]
        else:
            lines = ["def _match(e):", f"    {_GETTER}"]
        for names, unset in ((subs, "None"), (memos, "_UNSET")):
            if names:
                lines.append("    " + " = ".join(names) + " = " + unset)
        lines += [f"    {name} = {text}" for name, text in reads]   # derived ones use the memos
        lines.append("    _m = []")
        for index, expr in exprs:
            lines += ["    try:", f"        if {expr}:", f"            _m.append({int(index)})",
                      "    except _ERRS:", "        pass"]
        lines.append("    return _m")
        return "\n".join(lines) + "\n"

    def _deferred(self, src: str) -> Callable[[Mapping], list[int]]:
        """A function that compiles ``src`` (a ``_match``) when first called."""
        compiled: list[Callable] = []

        def call(e: Mapping) -> list[int]:
            if not compiled:
                compiled.append(self._define(src, "_match"))
            return compiled[0](e)
        return call

    def _define(self, src: str, name: str) -> Callable:
        code = compile(src, f"<netvigil-rules:{name}>", "exec")
        scope: dict[str, Any] = {}
        exec(code, self.ns, scope)  # noqa: S102 - our own generated source, constants by name
        return scope[name]


def _worth_sharing(node: CNode) -> bool:
    """Whether a sub-condition costs more than reading a memoized result."""
    if isinstance(node, CCmp):
        return node.scalar_type == "net" or node.op in ("glob", "regex", "pmatch") or \
            node.access in ("any", "labels", "either")
    return not isinstance(node, CConst) and cost(node) > 1


def _value_key(value: Any) -> Any:
    """A key equal only for constants that behave the same in generated code, or None."""
    if isinstance(value, (frozenset, tuple)):
        try:
            return (type(value), value, frozenset(type(v) for v in value))
        except TypeError:
            return None
    if isinstance(value, (str, int, float, bytes)) and not isinstance(value, bool):
        return (type(value), value)
    return None
