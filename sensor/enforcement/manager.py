"""Enforcement manager: rule engine requests -> deny map entries.

Fed the requests of matches by the run loop's request queue (sensor.enforcement.request_queue).
Turns a request into deny keys (scope x direction x protocol x port x CIDR),
applies the safety list, the per-rule cap and the mode, writes the entries,
expires them (a sweeper thread, and the kernel ignores expired entries even
when no agent runs), reconciles pinned state on start, and measures the time
from the matching event to the entry being in the map.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sensor import cgroups
from sensor.boottime import boot_ns
from sensor.enforcement.errors import EnforcementError, InvalidEntryError
from sensor.enforcement.keys import (
    DIR_EGRESS, DIR_INGRESS, MODE_AUDIT, MODE_ENFORCE, MODES, ORIGIN_DETECTION, ORIGIN_MANUAL,
    ORIGIN_STATIC, DenyKey, DenyValue,
)
from rules.enforcement import EnforcementRequest
from sensor.enforcement.latency import LatencyWindow
from sensor.enforcement.pod_scopes import GROUP_SCOPES, PodScopes
from sensor.enforcement.maps import EnforcementMaps
from sensor.enforcement.safety import SafetyList

log = logging.getLogger(__name__)

ANY_ADDRESS = "::/0"   # v4-mapped space included: matches IPv4 and IPv6


Request = EnforcementRequest
"""What the manager installs: the rule engine's enforcement request."""


@dataclass(frozen=True)
class SubmitResult:
    """What one submit() did."""

    installed: tuple[DenyKey, ...] = ()
    refreshed: tuple[DenyKey, ...] = ()
    rejected: str = ""          # reason when nothing was installed
    refused: tuple[str, ...] = ()  # per key not installed: safety, cap, full, invalid, error


class ScopeResolver:
    """Scope names -> cgroup ids, using the event's identity fields."""

    def __init__(self, index: cgroups.CgroupIndex | None = None,
                 pod_scopes: PodScopes | None = None) -> None:
        self._index = index
        self.pod_scopes = pod_scopes
        """Pods by identity, for the workload and namespace scopes (sensor.enforcement.pod_scopes)."""

    @property
    def index(self) -> cgroups.CgroupIndex:
        """Lazily built cgroup id -> path index."""
        if self._index is None:
            self._index = cgroups.CgroupIndex(cgroups.mount())
        return self._index

    def scope_ids(self, req: Request) -> list[int]:
        """Cgroup ids (0 = node) the request applies to."""
        if req.cgroups:
            try:
                mount = self.index.mount
                return [cgroups.cgroup_id(cgroups.resolve(p, mount)) for p in req.cgroups]
            except cgroups.CgroupError as exc:
                raise InvalidEntryError(f"rule {req.rule!r}: {exc}") from None
        if req.scope == "node":
            return [0]
        ev = req.event
        if ev is None:
            return [0]   # static entry without cgroups: the whole node
        cgid = self.own_cgroup(ev, req.rule)
        if req.scope in ("process", "container"):
            # a process sits in its own cgroup or in its container's: either way proc.cgroup_id
            container_cg = ev.get("container.cgroup_id")
            if req.scope == "container" and isinstance(container_cg, int) and container_cg > 0:
                return [container_cg]
            return [cgid]
        if req.scope in GROUP_SCOPES:
            if self.pod_scopes is None:
                raise InvalidEntryError(f"rule {req.rule!r}: scope {req.scope} needs pod identity "
                                        "(the agent's Kubernetes enrichment)")
            return self.pod_scopes.resolve(req)
        if req.scope == "pod":
            in_container = ev.get("container.id", "host") not in ("host", "", None)
            if not in_container:
                return [cgid]  # a host process has no pod: fall back to its own cgroup
            base = int(ev.get("container.cgroup_id", cgid))
            parent = self.pod_cgroup(ev, base)
            if parent is None:
                raise InvalidEntryError(f"rule {req.rule!r}: cgroup {base} is gone, no pod scope")
            return [parent]
        raise InvalidEntryError(f"rule {req.rule!r}: unknown scope {req.scope!r}")

    def own_cgroup(self, ev: Mapping[str, Any], rule: str) -> int:
        """The cgroup id of the event's process (InvalidEntryError naming `rule` when none)."""
        cgid = ev.get("proc.cgroup_id")
        if not isinstance(cgid, int) or isinstance(cgid, bool) or cgid <= 0:
            raise InvalidEntryError(f"rule {rule!r}: event has no proc.cgroup_id")
        return cgid

    def pod_cgroup(self, ev: Mapping[str, Any], base: int) -> int | None:
        """The pod's cgroup: the parent of the container's cgroup `base` (None if gone)."""
        parent = self._parent_via_pid(ev, base)
        if parent is None:
            try:
                parent = self.index.parent_of(base)
            except cgroups.CgroupError:
                parent = None
        return parent

    @staticmethod
    def _parent_via_pid(ev: Mapping[str, Any], cgid: int) -> int | None:
        """Parent cgroup id found through /proc/<pid>/cgroup (cheap; None if the process
        is gone or moved)."""
        pid = ev.get("proc.pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            return None
        try:
            path = cgroups.proc_cgroup_path(pid)
            if cgroups.cgroup_id(path) != cgid:
                return None
            return cgroups.cgroup_id(path.parent)
        except cgroups.CgroupError:
            return None


def request_keys(req: Request, scope_ids: Sequence[int]) -> list[DenyKey]:
    """Every deny key a request describes."""
    if req.action != "deny":
        raise InvalidEntryError(f"rule {req.rule!r}: unsupported action {req.action!r}")
    if req.target == "remote":
        direction = DIR_EGRESS
        nets = list(req.cidrs)
        if not nets:
            if req.event is not None or not req.ports:
                raise InvalidEntryError(f"rule {req.rule!r}: no remote address to deny")
            nets = [ANY_ADDRESS]   # static: ports only = any destination on those ports
    elif req.target == "listen_port":
        direction = DIR_INGRESS
        nets = list(req.cidrs) or [ANY_ADDRESS]
        if not req.ports:
            raise InvalidEntryError(f"rule {req.rule!r}: listen_port without a port")
    else:
        raise InvalidEntryError(f"rule {req.rule!r}: unknown target {req.target!r}")
    ports = list(req.ports) or [0]
    return [DenyKey.build(s, direction, req.protocol, p, n)
            for s in scope_ids for p in ports for n in nets]


class EnforcementManager:
    """Owns the deny entries of one agent (thread-safe)."""

    def __init__(self, maps: EnforcementMaps, safety: SafetyList, *,
                 mode_override: str | None = None, max_total: int = 60000,
                 resolver: ScopeResolver | None = None,
                 clock: Callable[[], int] = boot_ns,
                 wall_clock: Callable[[], int] = time.time_ns) -> None:
        if mode_override not in (None, "audit", "enforce"):
            raise EnforcementError(f"bad mode override {mode_override!r}")
        self.maps = maps
        self.safety = safety
        self.mode_override = mode_override
        self.max_total = max_total
        self.resolver = resolver or ScopeResolver()
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.RLock()
        self._index: dict[DenyKey, DenyValue] = {}
        self._per_rule: Counter[int] = Counter()
        self._counters: Counter[str] = Counter()
        self.detect_latency = LatencyWindow()
        self.submit_latency = LatencyWindow()
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()

    # ---- state ---------------------------------------------------------

    def _load_index(self) -> None:
        self._index = self.maps.entries()
        self._per_rule = Counter(v.rule_id for v in self._index.values())

    def entries(self) -> dict[DenyKey, DenyValue]:
        """The live entries as last read or written (kernel hit counts: maps.entries())."""
        with self._lock:
            return dict(self._index)

    def reconcile(self, static_requests: Iterable[Request] = (),
                  known_rules: Iterable[str] | None = None) -> dict[str, int]:
        """Align pinned state with the current rules: install the safety list and the
        static entries, drop expired entries, static entries no rule asks for any more,
        and detection entries of rules that no longer exist. Manual entries stay."""
        with self._lock:
            self.maps.set_safety(self.safety.entries)
            self._load_index()
            now = self._clock()
            names = self.maps.rule_names()
            known = set(known_rules) if known_rules is not None else None
            removed = Counter()
            for key, val in list(self._index.items()):
                if val.expires_ns and val.expires_ns <= now:
                    self._delete(key)
                    removed["expired"] += 1
                elif val.origin == ORIGIN_STATIC:
                    continue  # judged below against the wanted static set
                elif (val.origin == ORIGIN_DETECTION and known is not None
                      and names.get(val.rule_id) not in known):
                    self._delete(key)
                    removed["unknown_rule"] += 1
            wanted: set[DenyKey] = set()
            for req in static_requests:
                res = self.submit(req)
                wanted.update(res.installed)
                wanted.update(res.refreshed)
            for key, val in list(self._index.items()):
                if val.origin == ORIGIN_STATIC and key not in wanted:
                    self._delete(key)
                    removed["stale_static"] += 1
            self.maps.rebuild_scopes(self._index.keys())
            return {"entries": len(self._index), "static": len(wanted), **removed}

    # ---- requests --------------------------------------------------------

    def submit(self, req: Request, origin: int | None = None) -> SubmitResult:
        """Install the entries of one enforcement request (never raises for bad requests:
        they are counted and logged). `origin` ORIGIN_MANUAL: an operator's block carried
        on by the agent (its own mode, no mode override; an infinite TTL never expires)."""
        t0 = self._wall()
        self._counters["submitted"] += 1
        try:
            keys = request_keys(req, self.resolver.scope_ids(req))
        except EnforcementError as exc:
            self._counters["rejected_invalid"] += 1
            log.warning("enforcement request rejected: %s", exc)
            return SubmitResult(rejected=str(exc), refused=("invalid",))
        if origin is None:
            origin = ORIGIN_STATIC if req.event is None else ORIGIN_DETECTION
        manual = origin == ORIGIN_MANUAL
        mode = MODES.get(req.mode if manual else self.mode_override or req.mode, MODE_AUDIT)
        now = self._clock()
        expires = 0 if origin == ORIGIN_STATIC or math.isinf(req.ttl_s) else now + int(req.ttl_s * 1e9)
        installed: list[DenyKey] = []
        refreshed: list[DenyKey] = []
        refused: list[str] = []
        reason = ""
        with self._lock:
            rid = self.maps.rule_id(req.rule)
            for key in keys:
                if self.safety.covers(key):
                    self._counters["rejected_safety"] += 1
                    refused.append("safety")
                    reason = f"{key.network} is on the safety list"
                    continue
                old = self._index.get(key)
                if old is None:
                    if self._per_rule[rid] >= req.max_entries:
                        self._counters["rejected_cap"] += 1
                        refused.append("cap")
                        reason = f"rule {req.rule!r} reached max_entries={req.max_entries}"
                        continue
                    if len(self._index) >= self.max_total:
                        self._counters["rejected_full"] += 1
                        refused.append("full")
                        reason = f"deny map full ({self.max_total} entries)"
                        continue
                    val = DenyValue(rid, mode, origin, expires, now, 0)
                else:
                    val = self._merge(key, old, rid, mode, origin, expires)
                try:
                    new = self.maps.put(key, val)
                except EnforcementError as exc:
                    self._counters["errors"] += 1
                    refused.append("error")
                    reason = str(exc)
                    log.error("cannot write deny entry %s: %s", key.describe(), exc)
                    continue
                if old is not None and old.rule_id != val.rule_id:
                    self._per_rule[old.rule_id] -= 1
                    self._per_rule[val.rule_id] += 1
                elif old is None:
                    self._per_rule[rid] += 1
                self._index[key] = val
                (installed if new or old is None else refreshed).append(key)
        t1 = self._wall()
        if installed or refreshed:
            self._counters["installed"] += len(installed)
            self._counters["refreshed"] += len(refreshed)
            self.submit_latency.add(t1 - t0)
            ev_time = req.event.get("evt.time") if req.event else None
            if isinstance(ev_time, int) and not isinstance(ev_time, bool):
                self.detect_latency.add(t1 - ev_time)
        return SubmitResult(tuple(installed), tuple(refreshed),
                            "" if installed or refreshed else reason, tuple(refused))

    def _merge(self, key: DenyKey, old: DenyValue, rid: int, mode: int, origin: int,
               expires: int) -> DenyValue:
        """Same key requested again: keep the stronger mode, the later expiry, the hits."""
        keep_old_rule = old.mode == MODE_ENFORCE and mode == MODE_AUDIT
        new_expiry = 0 if (old.expires_ns == 0 or expires == 0) else max(old.expires_ns, expires)
        if old.origin == ORIGIN_STATIC or old.origin == ORIGIN_MANUAL:
            origin = old.origin
        return DenyValue(old.rule_id if keep_old_rule else rid,
                         old.mode if keep_old_rule else mode,
                         origin, new_expiry, old.created_ns, self._kernel_hits(key, old))

    def _kernel_hits(self, key: DenyKey, old: DenyValue) -> int:
        """Current hit count of an existing entry (the exact key exists, so the LPM
        lookup of the full key returns this very entry)."""
        raw = self.maps.deny.lookup(key.pack())
        return DenyValue.unpack(raw).hits if raw else old.hits

    def _delete(self, key: DenyKey) -> None:
        val = self._index.pop(key, None)
        if val is not None:
            self._per_rule[val.rule_id] -= 1
        self.maps.remove(key)

    # ---- expiry ----------------------------------------------------------

    def sweep(self, now: int | None = None) -> int:
        """Delete expired entries; returns how many."""
        now = self._clock() if now is None else now
        n = 0
        with self._lock:
            for key, val in list(self._index.items()):
                if val.expires_ns and val.expires_ns <= now:
                    self._delete(key)
                    n += 1
        self._counters["expired"] += n
        return n

    def start_sweeper(self, interval_s: float = 1.0) -> None:
        """Run sweep() every interval_s in a daemon thread (plus a periodic resync
        with the kernel map, which operators may change with `netvigil enforce`)."""
        if self._sweeper is not None:
            return
        self._stop.clear()

        def loop() -> None:
            ticks = 0
            while not self._stop.wait(interval_s):
                try:
                    self.sweep()
                    ticks += 1
                    if ticks % 30 == 0:
                        with self._lock:
                            self._load_index()
                            self.maps.rebuild_scopes(self._index.keys())
                except EnforcementError as exc:
                    log.error("enforcement sweeper: %s", exc)

        self._sweeper = threading.Thread(target=loop, name="netvigil-enforce-sweeper", daemon=True)
        self._sweeper.start()

    def stop(self) -> None:
        """Stop the sweeper thread."""
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
            self._sweeper = None

    # ---- stats -----------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters, live entries per rule, and detection->entry latency (p50/p99 ms)."""
        with self._lock:
            names = self.maps.rule_names()
            per_rule = {names.get(rid, f"rule#{rid}"): n for rid, n in self._per_rule.items() if n > 0}
            live = len(self._index)
        return {
            **{k: self._counters.get(k, 0) for k in (
                "submitted", "installed", "refreshed", "expired", "rejected_safety",
                "rejected_cap", "rejected_full", "rejected_invalid", "errors")},
            "entries": live,
            "entries_per_rule": per_rule,
            "detect_to_entry": self.detect_latency.summary(),
            "submit_to_entry": self.submit_latency.summary(),
            "kernel": self.maps.counters(),
        }


def manual_entries(maps: EnforcementMaps, keys: Sequence[DenyKey], *, mode: str, ttl_s: float | None,
                   rule: str = "manual") -> list[DenyKey]:
    """Write operator entries (`netvigil enforce block`); returns the keys written."""
    if mode not in MODES:
        raise InvalidEntryError(f"bad mode {mode!r}: audit|enforce")
    now = boot_ns()
    expires = 0 if not ttl_s else now + int(ttl_s * 1e9)
    rid = maps.rule_id(rule)
    for key in keys:
        maps.put(key, DenyValue(rid, MODES[mode], ORIGIN_MANUAL, expires, now, 0))
    return list(keys)


def scope_label(scope: int, index: cgroups.CgroupIndex | None) -> str:
    """'node', or the cgroup path relative to the cgroup2 mount, or 'cgroup:<id>'."""
    if scope == 0:
        return "node"
    if index is not None:
        p = index.path(scope)
        if p is not None:
            return p
    return f"cgroup:{scope}"
