"""Per-segment record encoder: events, process records, alerts and verdicts to msgpack.

Everything here runs on the sensor's hot path, so it only builds bytes in memory.
Per segment it keeps:

* a field table (field name -> small int),
* a value table (repeated strings, e.g. IP addresses, exe paths -> small int),
* a shape table: the set of fields an event carries, the values that are the same for
  every event of that shape (``evt.type``, ``fd.l4proto``, ``evt.res``...), and whether
  ``thread.tid`` equals the process's pid,
* process references: each process record is written once per segment and events
  carry only its small integer reference.

An event then costs its shape id, its time delta and its few variable values. The
encoder stores the fields the event stores, as they are: derived fields (fd.sip,
fd.name, ...) are not in a sensor's events (see rules.fields), so nothing is folded.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any

import msgpack

from rules.event import stored
from sensor.recording import format as fmt

PROCESS_PREFIXES = ("proc.", "user.", "group.", "container.", "k8s.")
# k8s fields that belong to the event, not to its process (peer behind fd.rip, ...)
EVENT_K8S_PREFIXES = ("k8s.peer.", "k8s.pod.lport_declared")
EXEC_ID = "proc.exec_id"
# fields whose value, when small (str/bool/None, int <= 0), is folded into the shape
CONST_CANDIDATES = frozenset({
    "evt.type", "evt.dir", "evt.res", "evt.rawres", "evt.category", "fd.type",
    "fd.typechar", "fd.sockfamily", "fd.l4proto", "fd.connected", "fd.name_changed",
    "evt.arg.domain", "evt.arg.type", "netvigil.verdict", "netvigil.rule",
})
# Derivation flags of shapes written by netvigil before events stored each fact once
# (then fd.name and the copies between fd.lip/cip/sip... were folded): never written
# now, still understood when reading such segments.
# (target, source, flag): target may be rebuilt by copying source
COPY_DERIVATIONS = (
    ("fd.lip", "fd.cip", 1 << 4), ("fd.lip", "fd.sip", 1 << 5),
    ("fd.lport", "fd.cport", 1 << 6), ("fd.lport", "fd.sport", 1 << 7),
    ("fd.rip", "fd.sip", 1 << 8), ("fd.rip", "fd.cip", 1 << 9),
    ("fd.rport", "fd.sport", 1 << 10), ("fd.rport", "fd.cport", 1 << 11),
)
D_FDNAME = 1
D_TID_PID = 2
FDNAME_SOURCES = ("fd.cip", "fd.cport", "fd.sip", "fd.sport")
MAX_VALUES = 1 << 16
MAX_SHAPES = 1 << 13
MAX_PLANS = 1 << 12
_I62 = 1 << 62  # evt.num is delta-coded only within this range (deltas stay 64-bit)
MAX_CONST_VALUES = 24  # distinct values of one constant field before it becomes variable
MAX_INTERN_LEN = 256
NO_INTERN_PROC_KEYS = frozenset({"exec_id", "start_ns", "exit_ns"})
_dict_get, _dict_keys = dict.get, dict.keys


class _Plan:
    """How events with one exact key sequence are split into const/variable/derived."""

    __slots__ = ("pid", "const_keys", "var_keys", "has_time", "tid", "get_consts", "version",
                 "seen")

    def __init__(self, pid: int, keys: tuple[str, ...], skip_process: bool) -> None:
        if not all(type(k) is str for k in keys):
            raise TypeError("event field names must be strings")
        self.pid = pid
        keyset = set(keys)
        self.has_time = "evt.time" in keyset
        self.tid = "thread.tid" in keyset
        const, var = [], []
        for k in keys:
            if k == "evt.time" or k == "thread.tid":
                continue
            if skip_process and k == EXEC_ID:
                continue
            if skip_process and k.startswith(PROCESS_PREFIXES) and not k.startswith(EVENT_K8S_PREFIXES):
                continue
            (const if k in CONST_CANDIDATES else var).append(k)
        self.version = -1
        self._set(tuple(const), tuple(var))

    def _set(self, const: tuple[str, ...], var: tuple[str, ...]) -> None:
        self.const_keys = const
        self.var_keys = var
        self.version += 1
        self.seen: list[set] = [set() for _ in const]
        if len(const) >= 2:
            self.get_consts = itemgetter(*const)
        elif const:
            k0 = const[0]
            self.get_consts = lambda ev: (ev[k0],)
        else:
            self.get_consts = lambda ev: ()

    def demote(self, keys: set[str]) -> None:
        """Treat ``keys`` as variable fields from now on (values too varied or unsuitable)."""
        self._set(tuple(k for k in self.const_keys if k not in keys),
                  self.var_keys + tuple(k for k in self.const_keys if k in keys))

    def too_varied(self, cvals: tuple) -> set[str]:
        """Record the constants of a new shape; keys with many distinct values."""
        out = set()
        for k, seen, v in zip(self.const_keys, self.seen, cvals):
            seen.add((type(v), v))
            if len(seen) > MAX_CONST_VALUES:
                out.add(k)
        return out


def _const_ok(v: Any) -> bool:
    t = type(v)
    return t is str or t is bool or v is None or (t is int and -4096 <= v <= 0)


class SegmentEncoder:
    """Encodes records of ONE segment; a new segment gets a new encoder (fresh tables)."""

    def __init__(self, seq: int, created_ns: int, emit: Callable[[bytes], None]) -> None:
        self.seq = seq
        self.created_ns = created_ns
        self._emit = emit
        self._pack = msgpack.Packer(use_bin_type=True, default=_fallback).pack
        self.fields: dict[str, int] = {}
        self.values: dict[Any, int] = {}
        self.shapes: dict[tuple, int] = {}
        self.plans: dict[tuple, _Plan] = {}
        self.proc_refs: dict[str, int] = {}
        self.proc_pids: dict[str, Any] = {}
        self.stored_procs: dict[str, dict] = {}
        self.last_t = created_ns
        self.last_num = 0
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.bytes = 0
        self.counts = {"events": 0, "processes": 0, "alerts": 0, "verdicts": 0}

    # -- low level ------------------------------------------------------------------
    def _out(self, rec: list) -> None:
        b = self._pack(rec)
        self.bytes += len(b) + fmt.TAG_LEN
        self._emit(b)

    def _out_definition(self, rec: list) -> None:
        """Definitions (fields, values, shapes) are written twice: many later records
        depend on each one, so one damaged byte must not make them all undecodable."""
        b = self._pack(rec)
        self.bytes += 2 * (len(b) + fmt.TAG_LEN)
        self._emit(b)
        self._emit(b)

    def _fid(self, name: str) -> int:
        fid = self.fields.get(name)
        if fid is None:
            fid = len(self.fields)
            self.fields[name] = fid
            self._out_definition([fmt.K_FIELD, fid, name])
        return fid

    def _intern(self, v: Any) -> int | None:
        t = type(v)
        if t is str:
            if len(v) > MAX_INTERN_LEN:
                return None
            key = v
        elif t is list or t is dict or t is tuple:
            key = (t.__name__, self._pack(v))
        else:
            return None
        vid = self.values.get(key)
        if vid is None:
            if len(self.values) >= MAX_VALUES:
                return None
            vid = len(self.values)
            self.values[key] = vid
            self._out_definition([fmt.K_VALUE, vid, v])
        return vid

    # -- records --------------------------------------------------------------------
    def has_process(self, exec_id: str) -> bool:
        """True if this segment already holds a record for ``exec_id``."""
        return exec_id in self.proc_refs

    def process(self, rec: dict) -> None:
        """Write a process record (a ProcessRecord.to_dict()), unless unchanged."""
        exec_id = rec.get("exec_id")
        if not isinstance(exec_id, str):
            return
        if self.stored_procs.get(exec_id) == rec:
            return
        if not all(type(k) is str for k in rec):
            raise TypeError("process record field names must be strings")
        ref = self.proc_refs.get(exec_id)
        if ref is None:
            ref = len(self.proc_refs) + 1
            self.proc_refs[exec_id] = ref
        self.stored_procs[exec_id] = rec
        self.proc_pids[exec_id] = rec.get("pid")
        m: dict[int, Any] = {}
        for k, v in rec.items():
            fid = self._fid(k)
            if v and k not in NO_INTERN_PROC_KEYS:
                vid = self._intern(v)
                if vid is not None:
                    m[-fid - 1] = vid
                    continue
            m[fid] = v
        self.counts["processes"] += 1
        self._out([fmt.K_PROC, ref, m])

    def event(self, ev: Mapping[str, Any]) -> None:
        """Write one event; process fields are dropped when its process record is stored."""
        if not isinstance(ev, dict):
            ev = dict(ev)
        # what the event stores (an Event's derived fields are not recorded)
        exec_id = _dict_get(ev, EXEC_ID)
        ref = self.proc_refs.get(exec_id) if exec_id is not None else None
        keys = tuple(_dict_keys(ev))
        plan = self.plans.get((keys, ref is not None))
        if plan is None:
            if len(self.plans) >= MAX_PLANS:
                self._raw_event(ev)
                return
            plan = _Plan(len(self.plans), keys, ref is not None)
            self.plans[(keys, ref is not None)] = plan
        cvals = plan.get_consts(ev)
        derive = 0
        extra: list[str] = []
        if plan.tid:
            pid = _dict_get(ev, "proc.pid") if ref is None else self.proc_pids.get(exec_id)
            tid = ev["thread.tid"]
            if pid is not None and tid == pid and type(tid) is int:
                derive |= D_TID_PID
            else:
                extra.append("thread.tid")
        vals: list[Any] = []
        codes: list[int] = []
        new_num = None
        for k in (plan.var_keys + tuple(extra)) if extra else plan.var_keys:
            v = ev[k]
            t = type(v)
            if t is str:
                vid = self.values.get(v)
                if vid is None:
                    vid = self._intern(v)
                if vid is not None:
                    vals.append(vid)
                    codes.append(fmt.C_INTERN)
                    continue
            elif t is int and k == "evt.num" and -_I62 < v < _I62:
                vals.append(v - self.last_num)
                new_num = v
                codes.append(fmt.C_DELTA)
                continue
            vals.append(v)
            codes.append(fmt.C_RAW)
        skey = (plan.pid, plan.version, cvals, tuple(map(type, cvals)), derive, tuple(codes),
                tuple(extra))
        try:
            sid = self.shapes.get(skey)
        except TypeError:  # an unhashable value where a constant was expected
            sid = None
        if sid is None:
            bad = {k for k, v in zip(plan.const_keys, cvals) if not _const_ok(v)}
            if not bad:
                bad = plan.too_varied(cvals)
            if bad:  # e.g. clone's evt.rawres (a child pid): a variable field, not a constant
                plan.demote(bad)
                self.event(ev)
                return
            if len(self.shapes) >= MAX_SHAPES:
                self._raw_event(ev)
                return
            sid = self._define_shape(skey, plan, extra, codes)
        if new_num is not None:
            self.last_num = new_num
        t_ns = _dict_get(ev, "evt.time") if plan.has_time else None
        if type(t_ns) is int:
            dt = t_ns - self.last_t
            self.last_t = t_ns
            if self.first_ns is None:
                self.first_ns = self.last_ns = t_ns
            elif t_ns > self.last_ns:
                self.last_ns = t_ns
            elif t_ns < self.first_ns:
                self.first_ns = t_ns
        else:
            dt = None
        self.counts["events"] += 1
        self._out([fmt.K_EVENT, sid, dt, ref, vals])

    def _define_shape(self, skey: tuple, plan: _Plan, extra: list[str],
                      codes: list[int]) -> int:
        _, _, cvals, _, derive, _, _ = skey
        keys = plan.var_keys + tuple(extra)
        var = [[self._fid(k), c] for k, c in zip(keys, codes)]
        consts = [[self._fid(k), v] for k, v in zip(plan.const_keys, cvals)]
        has_time = 1 if plan.has_time else 0
        sid = len(self.shapes)
        self.shapes[skey] = sid
        self._out_definition([fmt.K_SHAPE, sid, var, consts, derive, has_time])
        return sid

    def _raw_event(self, ev: Mapping[str, Any]) -> None:
        """Fallback for events that do not fit the tables: stored with full names."""
        self.counts["events"] += 1
        t_ns = ev.get("evt.time")
        if type(t_ns) is int:
            self.first_ns = t_ns if self.first_ns is None else min(self.first_ns, t_ns)
            self.last_ns = t_ns if self.last_ns is None else max(self.last_ns, t_ns)
        self._out([fmt.K_RAWEVENT, stored(ev)])

    def alert(self, alert: Mapping[str, Any] | Any) -> None:
        """Write a Falco-format alert (dict, or an object with ``to_dict()``)."""
        self.counts["alerts"] += 1
        self._out([fmt.K_ALERT, _mapping(alert)])

    def verdict(self, verdict: Mapping[str, Any] | Any) -> None:
        """Write an enforcement verdict (mapping, dataclass or object with ``to_dict()``)."""
        self.counts["verdicts"] += 1
        self._out([fmt.K_VERDICT, _mapping(verdict)])


def _mapping(obj: Any) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return dict(obj)
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return {"value": str(obj)}


def _fallback(obj: Any) -> Any:
    """msgpack default= hook: sets/tuples as lists, dataclasses as dicts, others as str."""
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return str(obj)
