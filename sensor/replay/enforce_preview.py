"""--enforce-preview: what enforcement rules would have denied over recorded history.

Detection rules with ``enforce:`` install a deny entry when they match (for the matched
remote endpoint or listening port, in the rule's scope, for its TTL); later recorded
connections that such an entry covers would have been denied. Static entries
(``enforce.static``) are in force from the start. Connections are counted per rule and
per workload (Kubernetes workload, container, or host binary).
"""
from __future__ import annotations

import ipaddress
import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from sensor.replay.timespec import format_ns
from sensor.replay.views import INBOUND, LISTENING, OUTBOUND

_POD_HASH = re.compile(r"^(?P<base>.+?)(-[a-z0-9]{5,10})?-[a-z0-9]{5}$")
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


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


def scope_key(scope: str, ev: Mapping[str, Any]) -> Any:
    """What a deny entry of ``scope`` is keyed on for the process of ``ev``."""
    if scope == "node":
        return "node"
    cid = ev.get("container.id", "host")
    in_container = cid not in (None, "", "host")
    if scope == "container" and in_container:
        return ("container", cid)
    if scope == "pod" and in_container:
        return ("pod", ev.get("k8s.pod.uid") or (ev.get("k8s.ns.name"), ev.get("k8s.pod.name"))
                or cid)
    cg = ev.get("proc.cgroup_id")
    return ("cgroup", cg) if isinstance(cg, int) and cg else ("process", ev.get("proc.exec_id"))


@dataclass
class _Entry:
    rule: str
    target: str
    scope: Any               # scope key, or None for static entries (cgroup filter instead)
    nets: tuple[Net, ...]
    ports: frozenset[int]
    protocol: str
    expires_ns: int | None
    cgroups: tuple[str, ...] = ()

    def covers(self, ev: Mapping[str, Any], scope_of: Any) -> bool:
        etype = ev.get("evt.type")
        proto = ev.get("fd.l4proto")
        if self.protocol != "any" and proto != self.protocol:
            return False
        if self.target == "remote":
            if etype not in OUTBOUND:
                return False
            ip, port = ev.get("fd.rip"), ev.get("fd.rport")
        else:
            if etype not in INBOUND and etype not in LISTENING:
                return False
            ip, port = None, ev.get("fd.lport")
        if self.ports and port not in self.ports:
            return False
        if self.nets and ip is not None:
            try:
                addr = ipaddress.ip_address(str(ip))
            except ValueError:
                return False
            if not any(addr.version == n.version and addr in n for n in self.nets):
                return False
        if self.scope is not None:
            return self.scope == scope_of
        if self.cgroups:
            marks = [str(m) for m in (ev.get("container.id"), ev.get("k8s.pod.uid")) if m]
            marks += [m.replace("-", "_") for m in marks]
            return any(m and m != "host" and m in cg for cg in self.cgroups for m in marks)
        return True


@dataclass
class _RuleStats:
    rule: str
    describe: str
    mode: str
    detected: Counter = field(default_factory=Counter)       # workload -> matches
    denied: Counter = field(default_factory=Counter)         # workload -> connections
    destinations: dict[str, Counter] = field(default_factory=dict)
    capped: int = 0
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


def _nets(cidrs: tuple[str, ...]) -> tuple[Net, ...]:
    out = []
    for c in cidrs:
        try:
            out.append(ipaddress.ip_network(c, strict=False))
        except ValueError:
            continue
    return tuple(out)


class EnforcePreview:
    """Feeds on replayed events and the ruleset's enforcement requests."""

    def __init__(self, ruleset: Any) -> None:
        self.ruleset = ruleset
        self.stats: dict[str, _RuleStats] = {}
        self.entries: dict[tuple, _Entry] = {}
        self.live_per_rule: Counter = Counter()
        self._pending: list[Any] = []
        self.enforcing_rules = [r.name for r in getattr(ruleset, "rules", [])
                                if getattr(r, "enforce", None) is not None
                                and getattr(r, "enabled", True)]
        for req in ruleset.static_enforcements():
            st = self._stats(req, static=True, key=f"{req.rule} (static)")
            entry = _Entry(req.rule, req.target, None, _nets(req.cidrs), frozenset(req.ports),
                           req.protocol, None, tuple(req.cgroups))
            self.entries[("static", req.rule, req.cidrs, req.ports, req.protocol)] = entry
            st.describe = _describe(req, static=True)
        ruleset.set_enforcement_consumer(self)

    def _stats(self, req: Any, static: bool, key: str | None = None) -> _RuleStats:
        key = key or req.rule
        st = self.stats.get(key)
        if st is None:
            st = _RuleStats(key, _describe(req, static), req.mode)
            self.stats[key] = st
        return st

    # EnforcementConsumer protocol (the engine calls this for every enforcing match)
    def submit(self, req: Any) -> None:
        """Collect a detection-driven request (installed in ``observe``)."""
        self._pending.append(req)

    def observe(self, ev: Mapping[str, Any]) -> None:
        """Check ``ev`` against the entries in force, then evaluate the rules on it."""
        t = ev.get("evt.time")
        etype = ev.get("evt.type")
        if etype in OUTBOUND or etype in INBOUND or etype in LISTENING:
            self._check(ev, t)
        self._pending.clear()
        self.ruleset.evaluate(ev)
        for req in self._pending:
            self._install(req, ev, t)
        self._pending.clear()

    def _check(self, ev: Mapping[str, Any], t: Any) -> None:
        expired = []
        hit_rules = set()
        for key, entry in self.entries.items():
            if entry.expires_ns is not None and isinstance(t, int) and t > entry.expires_ns:
                expired.append(key)
                continue
            if entry.rule in hit_rules:
                continue
            scope_of = scope_key(key[1], ev) if entry.scope is not None else None
            if entry.covers(ev, scope_of):
                hit_rules.add(entry.rule)
                stat_key = entry.rule if entry.expires_ns is not None else f"{entry.rule} (static)"
                st = self.stats.get(stat_key)
                if st is None:
                    continue
                if entry.target == "remote":
                    dest = f"{ev.get('fd.rip')}:{ev.get('fd.rport')}/{ev.get('fd.l4proto')}"
                else:
                    dest = f"port {ev.get('fd.lport')}/{ev.get('fd.l4proto')}"
                st.deny(workload_of(ev), dest, t)
        for key in expired:
            entry = self.entries.pop(key)
            self.live_per_rule[entry.rule] -= 1

    def _install(self, req: Any, ev: Mapping[str, Any], t: Any) -> None:
        st = self._stats(req, static=False)
        st.detected[workload_of(ev)] += 1
        skey = scope_key(req.scope, ev)
        key = ("rule", req.scope, req.rule, skey, req.cidrs, req.ports, req.protocol)
        expires = t + int(req.ttl_s * 1e9) if isinstance(t, int) else None
        if key in self.entries:
            self.entries[key].expires_ns = expires
            return
        if self.live_per_rule[req.rule] >= req.max_entries:
            st.capped += 1
            return
        self.live_per_rule[req.rule] += 1
        self.entries[key] = _Entry(req.rule, req.target, skey, _nets(req.cidrs),
                                   frozenset(req.ports), req.protocol, expires)

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
            if r["workloads"]:
                stream.write(f"  {'WORKLOAD':<40} {'MATCHED':>7} {'DENIED':>7}  DESTINATIONS\n")
            for w in r["workloads"]:
                dests = ", ".join(f"{d} ({n})" for d, n in w["destinations"].items())
                stream.write(f"  {w['workload'][:40]:<40} {w['detected']:>7} "
                             f"{w['denied']:>7}  {dests}".rstrip() + "\n")
        for name in rep["enforcing_rules_without_effect"]:
            stream.write(f"rule \"{name}\": no match, nothing would have been denied\n")
        stream.flush()
