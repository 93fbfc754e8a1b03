"""Per-segment record decoder: the inverse of encoder.SegmentEncoder.

Each event shape is compiled once into a small function that builds the event (a
`rules.event.Event`: derived fields are computed where read) from the shape's start and
its values, so decoding costs about one dict construction per event. Segments written
before events stored each fact once carry derivation flags (fd.name, copies between
fd.lip and fd.cip...): their events are rebuilt as they were recorded.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rules.event import Event
from rules.fields import connection_name
from sensor.recording import encoder as enc
from sensor.recording import format as fmt
from sensor.recording.errors import DecodeError
from sensor.recording.prefilter import (MAX_REMEMBERED, NO_PROCESS, REMEMBERED, MatchOracle,
                                        ShapeMemo, compile_memo)

_SID_MASK = (1 << 13) - 1  # (ref << 13) | sid keys the per-process, per-shape caches

IT_EVENT = "event"
IT_PROCESS = "process"
IT_ALERT = "alert"
IT_VERDICT = "verdict"

Item = tuple  # (IT_EVENT, exec_id | None, fields) | (IT_PROCESS|IT_ALERT|IT_VERDICT, dict)


class SegmentDecoder:
    """Decodes the verified data records of one segment, in order."""

    def __init__(self, header: dict, skip_event_type: Callable[[str], bool] | None = None,
                 prefilter: MatchOracle | None = None) -> None:
        self.fields: dict[int, str] = {}
        self.values: dict[int, Any] = {}
        self.shapes: dict[int, Callable] = {}
        self.shape_recs: dict[int, list] = {}  # sid -> its definition (var, consts, flags)
        self.refs: dict[int, str] = {}
        self.pids: dict[int, Any] = {}
        created = header.get("created_ns")
        self.last_t = created if isinstance(created, int) else 0
        self.last_num = 0
        # (ref << 13 | shape) -> {**process fields, **shape constants}: the start of every
        # event of that process and shape (copied, then the event's own values stored)
        self.merged_cache: dict[int, dict[str, Any]] = {}
        self.ref_keys: dict[int, list[int]] = {}
        self.consts: dict[int, dict[str, Any]] = {}
        self.orphans = 0  # events whose process record was lost (decoded without it)
        # shapes whose evt.type the caller does not need (e.g. no rule looks at it):
        # their events are counted and skipped without being built
        self._skip_type = skip_event_type
        self.skip_sids: dict[int, int | None] = {}  # sid -> index of its evt.num delta
        self.skipped = 0
        # with a prefilter (the rules): events no rule can match are counted, not returned
        # (see sensor.recording.prefilter); procexit is always returned (process table)
        self._oracle = prefilter
        self.memos: dict[int, ShapeMemo] = {}
        self.exit_sids: set[int] = set()  # shapes of procexit events
        # (ref << 13 | shape) -> (key function, process part of the key, pid, exec_id,
        # process fields, memo) of a memoized shape
        self.pstate: dict[int, tuple[Callable, Any, Any, str | None,
                                     Mapping[str, Any] | None, ShapeMemo]] = {}
        self.remembered = 0
        self.prefiltered = 0

    def _merged(self, ref: int, sid: int, exec_id: str,
                resolve: Callable[[str], Mapping[str, Any]] | None,
                base: Mapping[str, Any] | None = None) -> dict[str, Any]:
        if base is None:
            base = resolve(exec_id) if resolve else {}
        merged = {**base, **self.consts[sid]}
        key = (ref << 13) | sid
        self.merged_cache[key] = merged
        self.ref_keys.setdefault(ref, []).append(key)
        return merged

    def _pstate(self, memo: ShapeMemo, ref: int | None, sid: int,
                resolve: Callable[[str], Mapping[str, Any]] | None
                ) -> tuple[Callable, Any, Any, str | None, Mapping[str, Any] | None, ShapeMemo]:
        """(key function, process part of the key, pid, exec_id, process fields, memo)
        for ``ref`` and ``sid``."""
        exec_id = self.refs.get(ref) if ref is not None else None
        if exec_id is None:  # no process (or its record was lost): the shape decides
            if ref is not None:
                self.orphans += 1
            return (memo.key, NO_PROCESS, None, None, None, memo)
        base = resolve(exec_id) if resolve else {}  # kept: the fields as of now
        st = (memo.key, memo.process_part(base), self.pids[ref], exec_id, base, memo)
        key = (ref << 13) | sid
        self.pstate[key] = st
        self.ref_keys.setdefault(ref, []).append(key)
        return st

    def _no_match(self, memo: ShapeMemo, k: Any, ev: Mapping[str, Any]) -> bool:
        """After building an event of a memoized shape: True if no rule matches it
        (then its key is remembered)."""
        if self._oracle.matches_any(ev):  # type: ignore[union-attr]
            return False
        if k is not None:
            if self.remembered >= MAX_REMEMBERED:  # bounded memory: start afresh
                for m in self.memos.values():
                    m.forget()
                self.remembered = 0
            memo.nohit.add(k)
            self.remembered += 1
        return True

    def decode(self, records: list[list], on_error: Callable[[int, Exception], None],
               resolve: Callable[[str], Mapping[str, Any]] | None = None,
               on_process: Callable[[dict], None] | None = None,
               on_exit: Callable[[dict], None] | None = None) -> list[Item]:
        """Items of ``records``; a record that fails calls ``on_error(position, exc)``.

        With ``resolve`` (exec_id -> process fields, e.g. ProcessTable.fields) events come
        out fully hydrated as ``(IT_EVENT, exec_id, {**process_fields, **event_fields})``;
        ``on_process`` sees each process record as it is decoded (before later events),
        ``on_exit`` each procexit event (in order with them, so that the caller's process
        table retires processes as the live one did).
        Without ``resolve`` events carry only their own fields.
        """
        out: list[Item] = []
        append = out.append
        shapes, refs, pids = self.shapes, self.refs, self.pids
        cache = self.merged_cache
        consts = self.consts
        skip = self.skip_sids
        memos, pstate = self.memos, self.pstate
        exits = self.exit_sids
        n_pre = 0
        n = len(records)
        i = 0
        last_t = self.last_t
        while i < n:
            try:
                for i in range(i, n):  # noqa: B020 - resumes after a failed record
                    rec = records[i]
                    if rec[0] == 1:  # fmt.K_EVENT
                        _, sid, dt, ref, vals, _tag = rec
                        if dt is not None:
                            last_t += dt
                            t = last_t
                        else:
                            t = None
                        # the common case first: a memoized shape of a process seen before
                        st = pstate.get((ref << 13) | sid) if ref is not None else None
                        if st is None:
                            if skip and sid in skip:
                                delta = skip[sid]
                                if delta is not None:
                                    self.last_num += vals[delta]
                                self.skipped += 1
                                continue
                            memo = memos.get(sid) if memos else None
                            if memo is not None:
                                st = self._pstate(memo, ref, sid, resolve)
                        if st is not None:
                            # its key, tested without unpacking st (advances last_num)
                            k = st[0](vals, t, st[1], st[2])
                            if k is REMEMBERED:  # known to match nothing
                                n_pre += 1
                                continue
                            _, _, pid, exec_id, base, memo = st
                            if memo.delta is not None:
                                self.last_num -= vals[memo.delta]  # the build advances it
                            if exec_id is None:
                                ev = shapes[sid](vals, t, None, consts[sid])
                            else:
                                merged = cache.get((ref << 13) | sid)
                                if merged is None:
                                    merged = self._merged(ref, sid, exec_id, resolve, base)
                                ev = shapes[sid](vals, t, pid, merged)
                            if self._no_match(memo, k, ev):
                                n_pre += 1
                            else:
                                append((IT_EVENT, exec_id, ev))
                            continue
                        if ref is None:
                            ev = shapes[sid](vals, t, None, consts[sid])
                            append((IT_EVENT, None, ev))
                        else:
                            exec_id = refs.get(ref)
                            if exec_id is None:  # its process record was lost
                                self.orphans += 1
                                ev = shapes[sid](vals, t, None, consts[sid])
                                append((IT_EVENT, None, ev))
                            else:
                                key = (ref << 13) | sid
                                merged = cache.get(key)
                                if merged is None:
                                    merged = self._merged(ref, sid, exec_id, resolve)
                                ev = shapes[sid](vals, t, pids[ref], merged)
                                append((IT_EVENT, exec_id, ev))
                        if on_exit is not None and sid in exits:
                            on_exit(ev)
                    else:
                        item = self._other(rec)
                        if item is not None:
                            append(item)
                            if on_exit is not None and item[0] is IT_EVENT \
                                    and item[2].get("evt.type") == "procexit":
                                on_exit(item[2])
                            if item[0] is IT_PROCESS:
                                for key in self.ref_keys.pop(rec[1], ()):
                                    cache.pop(key, None)
                                    pstate.pop(key, None)
                                if on_process is not None:
                                    on_process(item[1])
                break
            except (KeyError, IndexError, TypeError, ValueError, AttributeError,
                    DecodeError) as exc:
                on_error(i, exc)
                i += 1
        self.last_t = last_t
        self.prefiltered += n_pre
        return out

    def _other(self, rec: list) -> Item | None:
        kind = rec[0]
        if kind == fmt.K_FIELD:
            _, fid, name, _tag = rec
            if not isinstance(name, str):
                raise DecodeError("field name is not a string")
            self.fields[fid] = name
        elif kind == fmt.K_VALUE:
            _, vid, value, _tag = rec
            self.values[vid] = value
        elif kind == fmt.K_SHAPE:
            _, sid, var, consts, derive, has_time, _tag = rec
            if self.shape_recs.get(sid) == rec[2:6]:  # its second copy (or a repeat)
                return None
            redefined = sid in self.shape_recs
            self.shapes[sid] = self._compile(sid, var, consts, derive, has_time)
            self.shape_recs[sid] = rec[2:6]
            evt_type = self.consts[sid].get("evt.type")
            self.memos.pop(sid, None)
            if redefined:  # caches built for the shape's old form
                for cache in (self.pstate, self.merged_cache):
                    for key in [k for k in cache if k & _SID_MASK == sid]:
                        del cache[key]
            if evt_type == "procexit":
                self.exit_sids.add(sid)
            else:
                self.exit_sids.discard(sid)
            if self._skip_type is not None and isinstance(evt_type, str) \
                    and self._skip_type(evt_type):
                self.skip_sids[sid] = next((i for i, (_, codec) in enumerate(var)
                                            if codec == fmt.C_DELTA), None)
            else:
                self.skip_sids.pop(sid, None)
                if self._oracle is not None and isinstance(evt_type, str) \
                        and evt_type != "procexit":
                    memo = compile_memo(self._oracle, self, evt_type, self.fields, var,
                                        self.consts[sid], derive, has_time)
                    if memo is not None:
                        self.memos[sid] = memo
        elif kind == fmt.K_PROC:
            _, ref, m, _tag = rec
            fields, values = self.fields, self.values
            d = {fields[-k - 1] if k < 0 else fields[k]: values[v] if k < 0 else v
                 for k, v in m.items()}
            exec_id = d.get("exec_id")
            if not isinstance(exec_id, str):
                raise DecodeError("process record without exec_id")
            self.refs[ref] = exec_id
            self.pids[ref] = d.get("pid")
            return (IT_PROCESS, d)
        elif kind == fmt.K_ALERT:
            return (IT_ALERT, rec[1])
        elif kind == fmt.K_VERDICT:
            return (IT_VERDICT, rec[1])
        elif kind == fmt.K_RAWEVENT:
            ev = rec[1]
            if not isinstance(ev, dict):
                raise DecodeError("raw event is not a map")
            return (IT_EVENT, None, Event(ev))
        else:
            raise DecodeError(f"unknown record kind {kind!r}")
        return None

    def _compile(self, sid: int, var: list, consts: list, derive: int, has_time: int
                 ) -> Callable:
        """Build the decode function of one shape.

        Field names and constant values only enter the generated code as closure
        variables, never as source text.
        """
        if not isinstance(var, list) or not isinstance(consts, list) or not isinstance(derive, int):
            raise DecodeError("malformed shape")
        fields = self.fields
        ns: dict[str, Any] = {"DecodeError": DecodeError, "E": Event, "CN": connection_name}
        params = ["V=V", "S=S", "CD=CD"]
        defaults: dict[str, Any] = {"V": self.values, "S": self,
                                    "CD": {fields[fid]: value for fid, value in consts}}
        pre: list[str] = []
        parts: list[str] = []
        where: dict[str, str] = {}  # field name -> expression holding its value
        if has_time:
            parts.append("'evt.time': t")
        for name, value in defaults["CD"].items():
            key = f"c{len(where)}"
            defaults[key] = value
            params.append(f"{key}={key}")
            where[name] = key
        for i, (fid, codec) in enumerate(var):
            name = fields[fid]
            defaults[f"K{i}"] = name
            params.append(f"K{i}=K{i}")
            if codec == fmt.C_INTERN:
                pre.append(f"    x{i} = V[v[{i}]]")
            elif codec == fmt.C_DELTA:
                pre.append(f"    x{i} = S.last_num = S.last_num + v[{i}]")
            elif codec == fmt.C_RAW:
                pre.append(f"    x{i} = v[{i}]")
            else:
                raise DecodeError(f"unknown field codec {codec!r}")
            parts.append(f"K{i}: x{i}")
            where[name] = f"x{i}"
        if derive & enc.D_FDNAME:  # segments of earlier versions only
            c, cp, sv, sp = (where[k] for k in enc.FDNAME_SOURCES)
            parts.append(f"'fd.name': CN({c}, {cp}, {sv}, {sp})")
        for target, source, flag in enc.COPY_DERIVATIONS:
            if derive & flag:
                parts.append(f"{target!r}: {where[source]}")
        if derive & enc.D_TID_PID:
            alt = where.get("proc.pid", "M.get('proc.pid')")
            parts.append(f"'thread.tid': pid if pid is not None else {alt}")
        names = [p.partition("=")[0] for p in params]
        lines = [f"def make(DecodeError, {', '.join(names)}):",
                 "    def f(v, t, pid, M):",
                 f"        if len(v) != {len(var)}: raise DecodeError('wrong number of values')"]
        lines += ["    " + line for line in pre]
        lines.append("        d = E(M)")
        for part in parts:
            k, _, expr = part.partition(": ")
            lines.append(f"        d[{k}] = {expr}")
        lines.append("        return d")
        lines.append("    return f")
        self.consts[sid] = defaults["CD"]
        exec("\n".join(lines), ns)  # noqa: S102 - code built from our own templates only
        return ns["make"](DecodeError, **{n: defaults[n] for n in names})
