"""Investigation views over replayed events: process tree, connection timeline, export."""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from rich.text import Text
from rich.tree import Tree

from sensor import terminal
from sensor.replay.timespec import format_ns

OUTBOUND = frozenset({"connect", "connect_result", "sendto", "sendmsg"})
INBOUND = frozenset({"accept", "accept4"})
LISTENING = frozenset({"listen", "bind"})
CONNECTION_TYPES = OUTBOUND | INBOUND | LISTENING | {"netvigil_verdict"}
MAX_LINES_PER_PROCESS = 12
MAX_ANCESTRY = 32
MAX_CACHED = 4096  # ancestries the exporter remembers (by exec_id)

TIMELINE_COLUMNS: tuple[tuple[str, int | None, str], ...] = (
    ("TIME", 24, "left"), ("EVENT", 14, "left"), ("PROTO", 5, "left"), ("LOCAL", 22, "left"),
    ("", 2, "left"), ("REMOTE", 22, "left"), ("RESULT", 12, "left"), ("PID", 7, "right"),
    ("PROCESS", 15, "left"), ("WHERE", 28, "left"), ("PARENTS", None, "left"))

RecordLookup = Callable[[str], "Mapping[str, Any] | None"]


def _cmdline(rec: Mapping[str, Any]) -> str:
    args = rec.get("args") or []
    name = rec.get("name") or rec.get("exe") or "?"
    return " ".join([str(name), *map(str, args)]) if args else str(name)


def ancestry(exec_id: str | None, lookup: RecordLookup) -> list[dict[str, Any]]:
    """Parent first, then grandparent...: summaries of the recorded ancestors."""
    out: list[dict[str, Any]] = []
    rec = lookup(exec_id) if exec_id else None
    seen = {exec_id}
    parent = rec.get("parent_exec_id") if rec else None
    while parent and parent not in seen and len(out) < MAX_ANCESTRY:
        seen.add(parent)
        prec = lookup(parent)
        if prec is None:
            out.append({"exec_id": parent, "known": False})
            break
        out.append(process_summary(prec))
        parent = prec.get("parent_exec_id")
    return out


def process_summary(rec: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a process record an investigator reads first."""
    meta = rec.get("meta") or {}
    out = {"exec_id": rec.get("exec_id"), "pid": rec.get("pid"), "name": rec.get("name"),
           "exepath": rec.get("exepath"), "cmdline": _cmdline(rec), "uid": rec.get("uid"),
           "container_id": rec.get("container_id"), "start_ns": rec.get("start_ns")}
    for k in ("container.name", "container.image", "k8s.ns.name", "k8s.pod.name"):
        if k in meta:
            out[k] = meta[k]
    if rec.get("exit_ns") is not None:
        out["exit_ns"] = rec.get("exit_ns")
        out["exit_code"] = rec.get("exit_code")
    return out


def _endpoint(ip: Any, port: Any) -> str:
    if ip is None:
        return f":{port}" if port is not None else "?"
    ip = str(ip)
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _where(ev: Mapping[str, Any]) -> str:
    cid = ev.get("container.id", "host")
    if cid in (None, "", "host"):
        return "host"
    pod = ev.get("k8s.pod.name")
    if pod:
        return f"{ev.get('k8s.ns.name', '?')}/{pod}"
    return str(ev.get("container.name") or cid)


# ---------------------------------------------------------------- export
class Exporter:
    """JSON lines of the selected events, each with its full process ancestry."""

    def __init__(self, stream: TextIO, lookup: RecordLookup) -> None:
        self.stream = stream
        self.lookup = lookup
        self.count = 0
        self._cache: dict[str, list[dict[str, Any]]] = {}  # at most MAX_CACHED

    def add(self, ev: Mapping[str, Any]) -> None:
        exec_id = ev.get("proc.exec_id")
        anc = self._cache.get(exec_id) if isinstance(exec_id, str) else None
        if anc is None:
            anc = ancestry(exec_id, self.lookup) if isinstance(exec_id, str) else []
            if isinstance(exec_id, str):
                if len(self._cache) >= MAX_CACHED:
                    self._cache.clear()
                self._cache[exec_id] = anc
        out = dict(ev)
        out["netvigil.ancestry"] = anc
        self.stream.write(json.dumps(out, separators=(",", ":"), default=str) + "\n")
        self.count += 1

    def finish(self) -> None:
        self.stream.flush()


# ---------------------------------------------------------------- connections
def connection_row(ev: Mapping[str, Any], lookup: RecordLookup) -> dict[str, Any] | None:
    """One timeline row for a connection-type event, else None."""
    etype = ev.get("evt.type")
    if etype not in CONNECTION_TYPES:
        return None
    direction = ("out" if etype in OUTBOUND else "in" if etype in INBOUND
                 else "listen" if etype in LISTENING else "verdict")
    anc = ancestry(ev.get("proc.exec_id"), lookup)
    return {
        "time": format_ns(ev.get("evt.time")), "time_ns": ev.get("evt.time"),
        "type": etype, "direction": direction, "proto": ev.get("fd.l4proto"),
        "local": _endpoint(ev.get("fd.lip"), ev.get("fd.lport")),
        "remote": (_endpoint(ev.get("fd.rip"), ev.get("fd.rport"))
                   if ev.get("fd.rip") is not None and direction in ("out", "in", "verdict")
                   else None),
        "result": ev.get("evt.res") or ev.get("netvigil.verdict"),
        "pid": ev.get("proc.pid"), "process": ev.get("proc.name"),
        "cmdline": ev.get("proc.cmdline"), "exec_id": ev.get("proc.exec_id"),
        "container_id": ev.get("container.id"), "namespace": ev.get("k8s.ns.name"),
        "pod": ev.get("k8s.pod.name"), "where": _where(ev),
        "parents": [a.get("name", "?") for a in anc],
        "rule": ev.get("netvigil.rule"),
    }


class ConnectionTimeline:
    """Connections (and listeners, verdicts) of the selected events, in time order."""

    def __init__(self, stream: TextIO, lookup: RecordLookup, as_json: bool,
                 color: str = "auto") -> None:
        self.stream, self.lookup, self.as_json = stream, lookup, as_json
        self.count = 0
        self._rows = None if as_json else terminal.StreamTable(terminal.console(stream, color),
                                                                TIMELINE_COLUMNS)

    def add(self, ev: Mapping[str, Any]) -> None:
        row = connection_row(ev, self.lookup)
        if row is None:
            return
        self.count += 1
        if self._rows is None:
            self.stream.write(json.dumps(row, separators=(",", ":"), default=str) + "\n")
            return
        arrow = {"out": "->", "in": "<-", "listen": "..", "verdict": "xx"}[row["direction"]]
        parents = " < ".join(row["parents"][:4]) + (" < ..." if len(row["parents"]) > 4 else "")
        self._rows.row(row["time"], str(row["type"]), str(row["proto"] or ""), row["local"], arrow,
                       str(row["remote"] or ""), str(row["result"] or ""), str(row["pid"]),
                       str(row["process"] or "?"), row["where"], parents,
                       style="red" if row["direction"] == "verdict" else None)

    def finish(self) -> None:
        if self.count == 0 and self._rows is not None:
            self._rows.out.print("no connections in the selected events")
        self.stream.flush()


# ---------------------------------------------------------------- tree
@dataclass
class _Agg:
    count: int = 0
    first: int | None = None
    last: int | None = None
    peers: set = field(default_factory=set)

    def add(self, t: Any, peer: Any = None) -> None:
        self.count += 1
        if isinstance(t, int):
            self.first = t if self.first is None else min(self.first, t)
            self.last = t if self.last is None else max(self.last, t)
        if peer is not None and len(self.peers) < 1000:
            self.peers.add(peer)


@dataclass
class _Node:
    exec_id: str
    record: dict[str, Any]
    events: int = 0
    out: dict[tuple, _Agg] = field(default_factory=dict)
    inb: dict[tuple, _Agg] = field(default_factory=dict)
    listen: dict[tuple, _Agg] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)


class ProcessTree:
    """The processes behind the selected events, under their ancestors.

    Holds one node per process with selected events and per ancestor of one: the output
    itself (narrow a huge selection with --where/--since)."""

    def __init__(self, stream: TextIO, lookup: RecordLookup, as_json: bool,
                 color: str = "auto") -> None:
        self.stream, self.lookup, self.as_json = stream, lookup, as_json
        self.color = color
        self.nodes: dict[str, _Node] = {}
        self.selected: set[str] = set()

    def _node(self, exec_id: str, ev: Mapping[str, Any] | None = None) -> _Node:
        node = self.nodes.get(exec_id)
        if node is None:
            rec = self.lookup(exec_id)
            if rec is None and ev is not None:
                rec = {"exec_id": exec_id, "pid": ev.get("proc.pid"), "name": ev.get("proc.name"),
                       "exepath": ev.get("proc.exepath"),
                       "args": str(ev.get("proc.args") or "").split() or [],
                       "container_id": ev.get("container.id"),
                       "parent_exec_id": ev.get("proc.pexec_id"), "meta": {}}
            node = _Node(exec_id, dict(rec or {"exec_id": exec_id}))
            self.nodes[exec_id] = node
            if ev is not None:
                self._ancestors(node)
        return node

    def _ancestors(self, node: _Node) -> None:
        """Copy the ancestors' records now: replay keeps records only while needed."""
        parent = node.record.get("parent_exec_id")
        depth = 0
        while parent and parent not in self.nodes and depth < MAX_ANCESTRY:
            rec = self.lookup(parent)
            if rec is None:
                return
            self.nodes[parent] = _Node(parent, dict(rec))
            parent = rec.get("parent_exec_id")
            depth += 1

    def add(self, ev: Mapping[str, Any]) -> None:
        exec_id = ev.get("proc.exec_id")
        if not isinstance(exec_id, str):
            return
        node = self._node(exec_id, ev)
        self.selected.add(exec_id)
        node.events += 1
        etype = ev.get("evt.type")
        t = ev.get("evt.time")
        proto = ev.get("fd.l4proto")
        if etype in OUTBOUND:
            key = (proto, _endpoint(ev.get("fd.rip"), ev.get("fd.rport")), ev.get("evt.res"))
            node.out.setdefault(key, _Agg()).add(t)
        elif etype in INBOUND:
            key = (proto, _endpoint(ev.get("fd.lip"), ev.get("fd.lport")))
            node.inb.setdefault(key, _Agg()).add(t, ev.get("fd.rip"))
        elif etype in LISTENING:
            key = (proto, _endpoint(ev.get("fd.lip"), ev.get("fd.lport")), etype)
            node.listen.setdefault(key, _Agg()).add(t)

    def _link(self) -> list[str]:
        for exec_id in list(self.selected):  # ancestors not copied when first seen
            child = self.nodes[exec_id]
            depth = 0
            while depth < MAX_ANCESTRY:
                parent = child.record.get("parent_exec_id")
                if not parent or parent in self.nodes:
                    break
                child = self._node(parent)
                depth += 1
        for exec_id, node in self.nodes.items():
            parent = node.record.get("parent_exec_id")
            if parent and parent != exec_id and parent in self.nodes:
                self.nodes[parent].children.append(exec_id)
        roots = [e for e, n in self.nodes.items()
                 if not n.record.get("parent_exec_id")
                 or n.record.get("parent_exec_id") not in self.nodes]
        key = lambda e: (self.nodes[e].record.get("start_ns") or 0, e)  # noqa: E731
        for n in self.nodes.values():
            n.children.sort(key=key)
        return sorted(roots, key=key)

    def finish(self) -> None:
        for exec_id, node in self.nodes.items():  # latest versions (exit) where still known
            rec = self.lookup(exec_id)
            if rec is not None:
                node.record = dict(rec)
        roots = self._link()
        if self.as_json:
            json.dump({"processes": [self._json(r) for r in roots]}, self.stream,
                      default=str, indent=2)
            self.stream.write("\n")
        else:
            out = terminal.console(self.stream, self.color)
            if not roots:
                out.print("no processes in the selected events")
            for r in roots:
                out.print(self._tree(r, None))
        self.stream.flush()

    def _label(self, node: _Node) -> Text:
        rec = node.record
        meta = rec.get("meta") or {}
        where = rec.get("container_id") or "?"
        if where != "host":
            pod = meta.get("k8s.pod.name")
            image = meta.get("container.image")
            where = f"container {str(where)[:12]}"
            if pod:
                where += f" pod {meta.get('k8s.ns.name', '?')}/{pod}"
            if image:
                where += f" image {image}"
        exited = ""
        if rec.get("exit_ns") is not None:
            exited = f" exited {rec.get('exit_code')}"
        events = f" ({node.events} events)" if node.events else ""
        return Text.assemble((f"{rec.get('name', '?')}", "bold"), f" [{rec.get('pid', '?')}] ",
                             f"{rec.get('exepath') or ''} \u2014 {_cmdline(rec)} \u2014 ",
                             (where, "cyan"), f" uid {rec.get('uid', '?')}", (exited, "dim"),
                             (events, "dim"))

    def _lines(self, node: _Node) -> list[str]:
        lines = []
        for (proto, ep, how), a in sorted(node.listen.items(), key=lambda kv: -kv[1].count):
            lines.append(f"listening {proto} {ep} ({how})")
        for (proto, ep), a in sorted(node.inb.items(), key=lambda kv: -kv[1].count):
            lines.append(f"<- {proto} {ep} from {len(a.peers)} peer(s), {a.count}x "
                         f"{format_ns(a.first)} .. {format_ns(a.last)}")
        for (proto, ep, res), a in sorted(node.out.items(), key=lambda kv: -kv[1].count):
            lines.append(f"-> {proto} {ep} {res or ''} {a.count}x "
                         f"{format_ns(a.first)} .. {format_ns(a.last)}")
        if len(lines) > MAX_LINES_PER_PROCESS:
            more = len(lines) - MAX_LINES_PER_PROCESS
            lines = lines[:MAX_LINES_PER_PROCESS] + [f"... {more} more"]
        return lines

    def _tree(self, exec_id: str, parent: Tree | None) -> Tree:
        node = self.nodes[exec_id]
        label = self._label(node)
        branch = Tree(label, guide_style="dim") if parent is None else parent.add(label)
        for line in self._lines(node):
            branch.add(Text(line, style="green" if line.startswith("listening") else ""))
        for c in node.children:
            self._tree(c, branch)
        return branch

    def _json(self, exec_id: str) -> dict[str, Any]:
        node = self.nodes[exec_id]
        out = process_summary(node.record)
        out["events"] = node.events
        out["listening"] = [{"proto": p, "endpoint": ep, "how": how, "count": a.count}
                            for (p, ep, how), a in node.listen.items()]
        out["inbound"] = [{"proto": p, "local": ep, "count": a.count, "peers": sorted(a.peers),
                           "first": format_ns(a.first), "last": format_ns(a.last)}
                          for (p, ep), a in node.inb.items()]
        out["outbound"] = [{"proto": p, "remote": ep, "result": res, "count": a.count,
                            "first": format_ns(a.first), "last": format_ns(a.last)}
                           for (p, ep, res), a in node.out.items()]
        out["children"] = [self._json(c) for c in node.children]
        return out
