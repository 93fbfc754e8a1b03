"""--enforce-preview: what enforcement rules would have denied over recorded history.

The preview runs the enforcement package itself over the replay: each match of a rule
with ``enforce:`` goes to a real EnforcementManager (same scope resolution, safety list,
per-rule cap, merging and TTLs as on a live node) writing into in-memory maps, and each
recorded connection is looked up in those maps the way the kernel looks it up, then
spared when the safety list protects it, as the kernel spares it. Static entries
(``enforce.static``) are in force from the start. Connections are counted per rule and
per workload (Kubernetes workload, container, or host binary).

A recording has no cgroup tree, so scopes resolve from the recorded identity: a
process's own ``proc.cgroup_id`` (or its exec id), its container's ``container.cgroup_id``,
its pod (uid, else namespace/name), its workload and namespace (the same selector the
agent's pod scopes use), and a static entry's cgroup paths by the container id or pod
uid they name.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from rules.enforcement import EnforcementRequest
from sensor.enforcement.keys import (DIR_EGRESS, DIR_INGRESS, ORIGIN_STATIC, PROTOCOLS)
from sensor.enforcement.manager import EnforcementManager, ScopeResolver
from sensor.enforcement.errors import InvalidEntryError
from sensor.enforcement.memory_maps import MemoryMaps
from sensor.enforcement.pod_scopes import GROUP_SCOPES, selector_of
from sensor.enforcement.safety import SafetyList
from sensor.replay.timespec import format_ns
from sensor.replay.views import INBOUND, LISTENING, OUTBOUND

_POD_HASH = re.compile(r"^(?P<base>.+?)(-[a-z0-9]{5,10})?-[a-z0-9]{5}$")
SWEEP_INTERVAL_NS = 1_000_000_000   # the live sweeper's default interval


def workload_of(ev: Mapping[str, Any]) -> str:
    """A grouping label: Kubernetes workload, container, or host binary."""
    cid = ev.get("container.id", "host")
    pod = ev.get("k8s.pod.name")
    if pod:
        m = _POD_HASH.match(str(pod))
        base = m.group("base") if m else pod
        return f"pod {ev.get('k8s.ns.name', '?')}/{base}"
    if cid not in (None, "", "host"):
        return f"container {ev.get('container.name') or ev.get('container.image') or cid}"
    return f"host {ev.get('proc.exepath') or ev.get('proc.name') or '?'}"


def _synthetic_id(*parts: Any) -> int:
    """A stable stand-in cgroup id (top bit set: never a real cgroup inode)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return (1 << 63) | (int.from_bytes(digest, "big") >> 1)


def _in_container(ev: Mapping[str, Any]) -> bool:
    return ev.get("container.id", "host") not in (None, "", "host")


class RecordedScopes(ScopeResolver):
    """The manager's scope resolution, with the cgroup tree replaced by recorded identity."""

    def __init__(self, static_cgroups: tuple[str, ...] = ()) -> None:
        super().__init__(index=None)
        self._static = {path: _synthetic_id("cgroup", path) for path in static_cgroups}

    def scope_ids(self, req: EnforcementRequest) -> list[int]:
        if req.cgroups:
            return [self._static.get(p) or _synthetic_id("cgroup", p) for p in req.cgroups]
        if req.scope in GROUP_SCOPES and req.event is not None:
            # the pods of a workload or namespace: on a node, each pod's cgroup gets the entry
            return [_synthetic_id("pods", selector_of(req.scope, req.event))]
        return super().scope_ids(req)

    def own_cgroup(self, ev: Mapping[str, Any], rule: str) -> int:
        cgid = ev.get("proc.cgroup_id")
        if isinstance(cgid, int) and not isinstance(cgid, bool) and cgid > 0:
            return cgid
        return _synthetic_id("process", ev.get("proc.exec_id"))

    def pod_cgroup(self, ev: Mapping[str, Any], base: int) -> int | None:
        pod = ev.get("k8s.pod.uid") or (ev.get("k8s.ns.name"), ev.get("k8s.pod.name"))
        if pod == (None, None):
            pod = ev.get("container.id")
        return _synthetic_id("pod", pod)

    def chain(self, ev: Mapping[str, Any]) -> list[int]:
        """The scopes a process sits in, node first, shallow to deep (its cgroup ancestry)."""
        own = self.own_cgroup(ev, "")
        out = [0]
        if _in_container(ev):
            container = ev.get("container.cgroup_id")
            base = container if isinstance(container, int) and container > 0 else own
            for scope in GROUP_SCOPES:
                try:
                    out.append(_synthetic_id("pods", selector_of(scope, ev)))
                except InvalidEntryError:
                    continue   # no namespace / workload known for this pod
            out.append(self.pod_cgroup(ev, base) or 0)
            marks = [str(m) for m in (ev.get("container.id"), ev.get("k8s.pod.uid")) if m]
            marks += [m.replace("-", "_") for m in marks]
            out += [sid for path, sid in self._static.items() if any(m in path for m in marks)]
            if base != own:
                out.append(base)
        out.append(own)
        return out


@dataclass
class _RuleStats:
    rule: str
    describe: str
    mode: str
    detected: Counter = field(default_factory=Counter)       # workload -> matches
    denied: Counter = field(default_factory=Counter)         # workload -> connections
    destinations: dict[str, Counter] = field(default_factory=dict)
    capped: int = 0
    refused_safety: int = 0
    spared_safety: int = 0
    first_ns: int | None = None
    last_ns: int | None = None

    def deny(self, workload: str, dest: str, t: Any) -> None:
        self.denied[workload] += 1
        self.destinations.setdefault(workload, Counter())[dest] += 1
        if isinstance(t, int):
            self.first_ns = t if self.first_ns is None else min(self.first_ns, t)
            self.last_ns = t if self.last_ns is None else max(self.last_ns, t)


def _describe(req: Any, static: bool) -> str:
    what = "remote endpoint" if req.target == "remote" else "listening port"
    text = f"deny {what}, scope {req.scope}, ttl {req.ttl_s:g}s"
    if static:
        parts = []
        if req.cidrs:
            parts.append(",".join(req.cidrs))
        if req.ports:
            parts.append("ports " + ",".join(map(str, req.ports)))
        parts.append(req.protocol)
        if req.cgroups:
            parts.append("cgroups " + ",".join(req.cgroups))
        text = f"static deny {what} " + " ".join(parts)
    return text


def _connection(ev: Mapping[str, Any]) -> tuple[int, int, str, list[tuple[str, int]], str] | None:
    """(direction, port, address looked up, (address, port) pairs the safety list is
    asked about, destination label) of a recorded connection, as the hooks see it."""
    etype = ev.get("evt.type")
    proto = ev.get("fd.l4proto")
    rip, rport, lport = ev.get("fd.rip"), ev.get("fd.rport"), ev.get("fd.lport")
    if etype in OUTBOUND:
        if rip is None or not isinstance(rport, int):
            return None
        return DIR_EGRESS, rport, str(rip), [(str(rip), rport)], f"{rip}:{rport}/{proto}"
    if etype in INBOUND or etype in LISTENING:
        if not isinstance(lport, int):
            return None
        if etype in INBOUND and rip is not None:     # a packet from the client (tc ingress)
            safe = [(str(rip), rport if isinstance(rport, int) else 0), (str(rip), lport)]
            return DIR_INGRESS, lport, str(rip), safe, f"port {lport}/{proto}"
        local = str(ev.get("fd.lip") or "::")          # bind/listen (cgroup bind hook)
        return DIR_INGRESS, lport, local, [(local, lport)], f"port {lport}/{proto}"
    return None


class EnforcePreview:
    """Feeds on replayed events: evaluates the rules, acts on their enforcement requests."""

    def __init__(self, ruleset: Any, safety: SafetyList | None = None,
                 mode_override: str | None = None) -> None:
        self.ruleset = ruleset
        self.stats: dict[str, _RuleStats] = {}
        self.now = 0
        self._swept = 0
        static = list(ruleset.static_enforcements())
        self.scopes = RecordedScopes(tuple(p for req in static for p in req.cgroups))
        self.maps = MemoryMaps()
        self.manager = EnforcementManager(self.maps, safety if safety is not None else SafetyList.build(),  # type: ignore[arg-type]
                                          mode_override=mode_override, resolver=self.scopes,
                                          clock=lambda: self.now)
        self.enforcing_rules = [r.name for r in getattr(ruleset, "rules", [])
                                if getattr(r, "enforce", None) is not None
                                and getattr(r, "enabled", True)]
        self.manager.reconcile()   # installs the safety list
        for req in static:
            st = self._stats(req, static=True, key=f"{req.rule} (static)")
            res = self.manager.submit(req)
            st.refused_safety += res.refused.count("safety")
            st.capped += res.refused.count("cap")

    def _stats(self, req: Any, static: bool, key: str | None = None) -> _RuleStats:
        key = key or req.rule
        st = self.stats.get(key)
        if st is None:
            st = _RuleStats(key, _describe(req, static), req.mode)
            self.stats[key] = st
        return st

    def observe(self, ev: Mapping[str, Any]) -> None:
        """Check ``ev`` against the entries in force, then act on the rules' matches."""
        t = ev.get("evt.time")
        if isinstance(t, int) and not isinstance(t, bool):
            self.now = t
            if t - self._swept >= SWEEP_INTERVAL_NS:
                self._swept = t
                self.manager.sweep(t)
        conn = _connection(ev)
        if conn is not None:
            self._check(ev, conn, t)
        for match in self.ruleset.evaluate(ev):
            if match.enforcement is not None:
                self._install(match.enforcement, ev)

    def _check(self, ev: Mapping[str, Any], conn: tuple, t: Any) -> None:
        direction, port, address, safe_pairs, dest = conn
        proto = PROTOCOLS.get(str(ev.get("fd.l4proto")), 0)
        hit = self.maps.match(self.scopes.chain(ev), direction, proto, port, address, self.now)
        if hit is None:
            return
        key, val = hit
        name = self.maps.rule_names().get(val.rule_id, f"rule#{val.rule_id}")
        st = self.stats.get(f"{name} (static)" if val.origin == ORIGIN_STATIC else name)
        if st is None:
            return
        if any(self.manager.safety.protects(a, p) for a, p in safe_pairs):
            st.spared_safety += 1
            return
        st.deny(workload_of(ev), dest, t)

    def _install(self, req: EnforcementRequest, ev: Mapping[str, Any]) -> None:
        st = self._stats(req, static=False)
        st.detected[workload_of(ev)] += 1
        res = self.manager.submit(req)
        st.capped += res.refused.count("cap")
        st.refused_safety += res.refused.count("safety")

    # -- report -------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """The preview as a JSON-able dict."""
        rules = []
        for st in self.stats.values():
            workloads = sorted(set(st.detected) | set(st.denied),
                               key=lambda w: (-st.denied[w], -st.detected[w], w))
            rules.append({
                "rule": st.rule, "enforcement": st.describe, "mode": st.mode,
                "detected": sum(st.detected.values()), "denied": sum(st.denied.values()),
                "entries_not_installed_cap": st.capped,
                "entries_refused_safety": st.refused_safety,
                "connections_spared_safety": st.spared_safety,
                "first": format_ns(st.first_ns) if st.first_ns else None,
                "last": format_ns(st.last_ns) if st.last_ns else None,
                "workloads": [{"workload": w, "detected": st.detected[w],
                               "denied": st.denied[w],
                               "destinations": dict(st.destinations.get(w, Counter())
                                                    .most_common(10))}
                              for w in workloads],
            })
        rules.sort(key=lambda r: (-r["denied"], -r["detected"], r["rule"]))
        quiet = [r for r in self.enforcing_rules
                 if r not in self.stats and f"{r} (static)" not in self.stats]
        return {"rules": rules, "enforcing_rules_without_effect": quiet}

    def write(self, stream: TextIO, as_json: bool) -> None:
        """Print the preview (readable text, or one JSON document)."""
        rep = self.report()
        if as_json:
            json.dump(rep, stream, indent=2, default=str)
            stream.write("\n")
            return
        if not self.enforcing_rules:
            stream.write("no enforcing rules loaded (rules need an `enforce:` key)\n")
            return
        for r in rep["rules"]:
            mode = "audit: would be recorded only" if r["mode"] == "audit" else "enforce"
            stream.write(f"rule \"{r['rule']}\": {r['enforcement']} [{mode}]\n")
            if r["rule"].endswith(" (static)"):
                stream.write(f"  in force from the start; would have denied {r['denied']} "
                             f"connection(s)")
            else:
                stream.write(f"  matched {r['detected']} time(s); would have denied "
                             f"{r['denied']} connection(s)")
            if r["first"]:
                stream.write(f" between {r['first']} and {r['last']}")
            stream.write("\n")
            if r["entries_not_installed_cap"]:
                stream.write(f"  {r['entries_not_installed_cap']} entries not installed "
                             f"(max_entries reached)\n")
            if r["entries_refused_safety"] or r["connections_spared_safety"]:
                stream.write(f"  safety list: {r['entries_refused_safety']} entries refused, "
                             f"{r['connections_spared_safety']} connection(s) spared\n")
            if r["workloads"]:
                stream.write(f"  {'WORKLOAD':<40} {'MATCHED':>7} {'DENIED':>7}  DESTINATIONS\n")
            for w in r["workloads"]:
                dests = ", ".join(f"{d} ({n})" for d, n in w["destinations"].items())
                stream.write(f"  {w['workload'][:40]:<40} {w['detected']:>7} "
                             f"{w['denied']:>7}  {dests}".rstrip() + "\n")
        for name in rep["enforcing_rules_without_effect"]:
            stream.write(f"rule \"{name}\": no match, nothing would have been denied\n")
        stream.flush()
