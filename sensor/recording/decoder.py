"""Per-segment record decoder: the inverse of encoder.SegmentEncoder.

Each event shape is compiled once into a small function that builds the event dict in
one expression, so decoding costs about one dict construction per event.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sensor.recording import encoder as enc
from sensor.recording import format as fmt
from sensor.recording.errors import RecordingError

IT_EVENT = "event"
IT_PROCESS = "process"
IT_ALERT = "alert"
IT_VERDICT = "verdict"

Item = tuple  # (IT_EVENT, exec_id | None, fields) | (IT_PROCESS|IT_ALERT|IT_VERDICT, dict)


class DecodeError(RecordingError):
    """A record is well-framed but its content does not decode (unknown ids...)."""


class SegmentDecoder:
    """Decodes the verified data records of one segment, in order."""

    def __init__(self, header: dict) -> None:
        self.fields: dict[int, str] = {}
        self.values: dict[int, Any] = {}
        self.shapes: dict[int, Callable] = {}
        self.refs: dict[int, str] = {}
        self.pids: dict[int, Any] = {}
        created = header.get("created_ns")
        self.last_t = created if isinstance(created, int) else 0
        self.last_num = 0

    def decode(self, records: list[list], on_error: Callable[[int, Exception], None]
               ) -> list[Item]:
        """Items of ``records``; a record that fails calls ``on_error(position, exc)``."""
        out: list[Item] = []
        append = out.append
        shapes, refs, pids = self.shapes, self.refs, self.pids
        n = len(records)
        i = 0
        while i < n:
            try:
                for i in range(i, n):  # noqa: B020 - resumes after a failed record
                    rec = records[i]
                    kind = rec[0]
                    if kind == fmt.K_EVENT:
                        _, sid, dt, ref, vals, _tag = rec
                        if dt is not None:
                            t = self.last_t = self.last_t + dt
                        else:
                            t = None
                        if ref is None:
                            append((IT_EVENT, None, shapes[sid](vals, t, None)))
                        else:
                            append((IT_EVENT, refs[ref], shapes[sid](vals, t, pids[ref])))
                    else:
                        item = self._other(rec)
                        if item is not None:
                            append(item)
                break
            except (KeyError, IndexError, TypeError, ValueError, AttributeError,
                    DecodeError) as exc:
                on_error(i, exc)
                i += 1
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
            self.shapes[sid] = self._compile(var, consts, derive, has_time)
        elif kind == fmt.K_PROC:
            _, ref, m, _tag = rec
            d = {}
            for k, v in m.items():
                if k < 0:
                    d[self.fields[-k - 1]] = self.values[v]
                else:
                    d[self.fields[k]] = v
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
            return (IT_EVENT, None, ev)
        else:
            raise DecodeError(f"unknown record kind {kind!r}")
        return None

    def _compile(self, var: list, consts: list, derive: int, has_time: int) -> Callable:
        """Build the decode function of one shape; names only enter via its namespace."""
        ns: dict[str, Any] = {"V": self.values, "S": self, "DecodeError": DecodeError}
        parts = []
        pre = []
        if has_time:
            parts.append("'evt.time': t")
        for i, (fid, value) in enumerate(consts):
            ns[f"C{i}"] = self.fields[fid]
            ns[f"CV{i}"] = value
            parts.append(f"C{i}: CV{i}")
        for i, (fid, codec) in enumerate(var):
            ns[f"K{i}"] = self.fields[fid]
            if codec == fmt.C_INTERN:
                parts.append(f"K{i}: V[v[{i}]]")
            elif codec == fmt.C_DELTA:
                pre.append(f"    n{i} = S.last_num = S.last_num + v[{i}]")
                parts.append(f"K{i}: n{i}")
            elif codec == fmt.C_RAW:
                parts.append(f"K{i}: v[{i}]")
            else:
                raise DecodeError(f"unknown field codec {codec!r}")
        lines = ["def f(v, t, pid):",
                 f"    if len(v) != {len(var)}: raise DecodeError('wrong number of values')"]
        lines += pre
        lines.append("    d = {" + ", ".join(parts) + "}")
        if derive & enc.D_FDNAME:
            lines.append("    d['fd.name'] = f\"{d['fd.cip']}:{d['fd.cport']}->"
                         "{d['fd.sip']}:{d['fd.sport']}\"")
        for target, source, flag in enc.COPY_DERIVATIONS:
            if derive & flag:
                lines.append(f"    d[{target!r}] = d[{source!r}]")
        if derive & enc.D_TID_PID:
            lines.append("    d['thread.tid'] = pid if pid is not None else d.get('proc.pid')")
        lines.append("    return d")
        exec("\n".join(lines), ns)  # noqa: S102 - code built from our own templates only
        return ns["f"]
