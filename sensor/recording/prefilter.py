"""Skipping recorded events that no rule can match, without building them.

Rules are pure functions of the fields they read (``RuleSet.fields_read``). Within a
segment, an event is determined by its shape, its process record and its few variable
values, so for each shape this module compiles a *key function* that takes, from the
raw record, only what the rules read: the variable values they look at (interned
strings by their table id), the process fields they look at (once per process and
shape), and for fields only compared with numbers, just how the value compares with
those numbers (``evt.num = 0`` cannot tell 5 from 6). Two events with the same key match
the same rules; once an event was built and matched nothing, later events with its key
are counted and skipped. Events that match something are always built and yielded.
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping
from itertools import count
from typing import Any, Protocol

from rules.fields import FIELDS_BY_NAME, SERVER_SIDE_TYPES, stored_sources
from sensor.recording import encoder as enc
from sensor.recording import format as fmt
from sensor.recording.errors import DecodeError

MAX_REMEMBERED = 1 << 18
"""Keys remembered per segment (a bound on memory; the cache restarts when full)."""

REMEMBERED = object()
"""What a shape's key function returns for an event whose key is known to match nothing."""

NO_PROCESS = object()
"""The process part of the keys of events without a process record."""

_PROCESS_IDS = count()
"""Numbers standing for process key parts (never reused, so a stale one never collides)."""


class MatchOracle(Protocol):
    """What the prefilter needs from a rule set (``rules.engine.RuleSet`` is one)."""

    def fields_read(self, evt_type: str) -> Mapping[str, frozenset | None]:
        """Fields deciding the match of an event of ``evt_type`` (see RuleSet)."""

    def matches_any(self, event: Mapping[str, Any]) -> bool:
        """True if some rule matches ``event``."""


def rank(value: Any, consts: tuple[int, ...]) -> Any:
    """How an int compares with the sorted ``consts`` (all that ``= < in ...`` can see);
    other values stand for themselves (tagged with their type)."""
    if type(value) is int:
        i = bisect_left(consts, value)
        return (i << 1) | (i < len(consts) and consts[i] == value)
    return (type(value), value)


def raw(value: Any) -> Any:
    """A value as a key part: ``1``, ``True`` and ``1.0`` must not be taken as equal."""
    return value if type(value) is str else (type(value), value)


def freeze(value: Any) -> Any:
    """A hashable stand-in for a field value (lists and maps included)."""
    t = type(value)
    if t is str:
        return value
    if t is list or t is tuple:
        return (t, tuple(freeze(v) for v in value))
    if t is dict:
        return (t, tuple(sorted((k, freeze(v)) for k, v in value.items())))
    return (t, value)


class ShapeMemo:
    """Key functions and remembered no-match keys of one event shape."""

    __slots__ = ("key", "process_key", "proc_fields", "delta", "nohit", "_ids")

    def __init__(self, key: Any, proc_fields: tuple[tuple[str, tuple | None], ...],
                 delta: int | None) -> None:
        self.key = key                  # (vals, t, pk, pid) -> key, REMEMBERED or None
        #                                 (unhashable); advances evt.num
        self.proc_fields = proc_fields  # (name, sorted consts or None) read from the process
        self.process_key = process_key_function(proc_fields)
        """merged process fields -> the part of the key a process (and the shape's
        constants) decides"""
        self.delta = delta              # index of the evt.num delta among the values
        self.nohit: set = set()
        self._ids: dict[Any, int] = {}  # process key part -> its number

    def process_part(self, fields: Mapping[str, Any]) -> Any:
        """What stands for ``fields`` in this shape's keys: a number per distinct process
        key part (hashed once per process, not once per event)."""
        part = self.process_key(fields)
        if part.__class__ is not tuple:  # unhashable fields: a key of the process's own
            return part
        ids = self._ids
        n = ids.get(part)
        if n is None:
            if len(ids) >= MAX_REMEMBERED:  # bounded memory (numbers are never reused)
                ids.clear()
            n = ids[part] = next(_PROCESS_IDS)
        return n

    def forget(self) -> None:
        """Drop the remembered no-match keys (and the process numbers)."""
        self.nohit.clear()
        self._ids.clear()


def process_key_function(proc_fields: tuple[tuple[str, tuple | None], ...]
                         ) -> Callable[[Mapping[str, Any]], Any]:
    """``fields -> key part`` for ``proc_fields`` (name, sorted consts or None), compiled:
    each value ranked against its constants, or frozen; a value that cannot be hashed or
    ordered gives a key of its own (remembered per process only)."""
    params: dict[str, Any] = {"rank": rank, "F": freeze}
    parts = []
    for i, (name, consts) in enumerate(proc_fields):
        params[f"N{i}"] = name
        if consts is not None:
            params[f"C{i}"] = consts
            parts.append(f"rank(g(N{i}), C{i})")
        else:
            parts.append(f"(x if (x := g(N{i})).__class__ is str else F(x))")
    src = (f"def make({', '.join(params)}):\n"
           f"    def process_key(m):\n"
           f"        g = m.get\n"
           f"        try:\n"
           f"            k = ({''.join(p + ', ' for p in parts)})\n"
           f"            hash(k)\n"
           f"        except TypeError:\n"
           f"            return object()\n"
           f"        return k\n"
           f"    return process_key\n")
    ns: dict[str, Any] = {}
    exec(src, ns)  # noqa: S102 - built from our own templates; values bound by name only
    return ns["make"](**params)


def compile_memo(oracle: MatchOracle, state: Any, evt_type: str, fields: Mapping[int, str], var: list,
                 consts: Mapping[str, Any], derive: int, has_time: int) -> ShapeMemo | None:
    """The memo of a shape (its K_SHAPE record's parts), or None if the rules say nothing.

    ``state`` is the decoder (its ``last_num`` is the running ``evt.num``).
    """
    uses = oracle.fields_read(evt_type)
    if uses is None:
        return None
    var_names = [fields[fid] for fid, _ in var]
    codecs = [codec for _, codec in var]
    pos = {name: i for i, name in enumerate(var_names)}
    copies = {t: s for t, s, flag in enc.COPY_DERIVATIONS if derive & flag}
    memo = ShapeMemo(None, (), None)
    params: dict[str, Any] = {"rank": rank, "raw": raw, "bl": bisect_left,
                              "DecodeError": DecodeError, "NOHIT": memo.nohit,
                              "REMEMBERED": REMEMBERED}
    parts: list[str] = []
    proc: list[tuple[str, tuple | None]] = []
    deltas = [i for i, c in enumerate(codecs) if c == fmt.C_DELTA]
    if len(deltas) > 1:  # not what the encoder writes: build such events one by one
        return None
    delta = deltas[0] if deltas else None

    def value_expr(name: str) -> tuple[str, bool] | None:
        """(expression of a field's value as key material, known to be an int);
        None: the value comes from the process record."""
        if name in pos:
            i = pos[name]
            if codecs[i] == fmt.C_DELTA:
                return "n", True  # the running evt.num, advanced once per event below
            return f"v[{i}]", False  # interned: the value's table id (equal ids <=> values)
        if name == "evt.time" and has_time:
            return "t", False
        return None

    # what the rules read, as the fields this shape stores: a derived field (fd.sport) by
    # the ends it is computed from, each stored field once with the union of its uses
    needed: dict[str, frozenset | None] = {}
    for name, use in sorted(uses.items()):
        sources: list[str] = [name]
        if name == "fd.name" and derive & enc.D_FDNAME:
            sources = list(enc.FDNAME_SOURCES)
        elif name in copies:
            sources = [copies[name]]
        elif name == "thread.tid" and derive & enc.D_TID_PID:
            parts.append("raw(pid)")
            sources = ["proc.pid"]
        elif name not in pos and name not in consts:  # derived (fd.sport): its stored ends
            spec = FIELDS_BY_NAME.get(name)
            if spec is not None and spec.by_role:  # the shape fixes the role: one end
                server = evt_type in SERVER_SIDE_TYPES or not ("fd.rip" in pos or "fd.rip" in consts)
                sources = [spec.by_role[0] if server else spec.by_role[1]]
            else:
                sources = [s for s in stored_sources(name) if s != name] or [name]
        for src in sources:
            if src not in needed:
                needed[src] = use
            elif needed[src] is not None:
                needed[src] = None if use is None else needed[src] | use
    for src, use in needed.items():
        found = value_expr(src)
        if found is None:
            if src not in consts:  # constants are the same for every event of the shape
                proc.append((src, tuple(sorted(use)) if use is not None else None))
            continue
        expr, is_int = found
        if src in pos and codecs[pos[src]] == fmt.C_INTERN:
            parts.append(expr)
        elif use is None:
            parts.append(f"raw({expr})")
        else:
            c = f"C{len(params)}"
            params[c], params[c + "s"] = tuple(sorted(use)), frozenset(use)
            if len(use) == 1:  # the same number without a call: above it, and equal to it
                params[c + "v"] = next(iter(use))
                ranked = f"(({expr} > {c}v) << 1 | ({expr} == {c}v))"
            else:
                ranked = f"(bl({c}, {expr}) << 1 | ({expr} in {c}s))"
            parts.append(ranked if is_int else
                         f"({ranked} if {expr}.__class__ is int else rank({expr}, {c}))")
    names = list(params)
    body = [f"        if len(v) != {len(var)}: raise DecodeError('wrong number of values')"]
    if delta is not None:
        body.append(f"        n = S.last_num = S.last_num + v[{delta}]")
    body.append(f"        k = (pk, {''.join(p + ', ' for p in parts)})")
    body += ["        try:",
             "            if k in NOHIT: return REMEMBERED",
             "        except TypeError: return None  # unhashable: evaluated, not remembered",
             "        return k"]
    src = (f"def make(S, {', '.join(names)}):\n"
           f"    def key(v, t, pk, pid):\n" + "\n".join(body) + "\n"
           f"    return key\n")
    ns: dict[str, Any] = {}
    exec(src, ns)  # noqa: S102 - built from our own templates; values bound by name only
    memo.proc_fields, memo.delta = tuple(proc), delta
    memo.process_key = process_key_function(memo.proc_fields)
    memo.key = ns["make"](state, **params)
    return memo
