"""Enforcement manager: requests -> entries, scopes, TTL, cap, safety, reconcile, stats.

Uses an in-memory stand-in for the pinned maps (the kernel side is covered by
tests/bpf/test_enforcement.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from rules.enforcement import EnforcementRequest
from sensor.enforcement.keys import (
    MODE_AUDIT, MODE_ENFORCE, ORIGIN_DETECTION, ORIGIN_MANUAL, ORIGIN_STATIC, DenyKey, DenyValue,
)
from sensor.enforcement.manager import EnforcementManager, ScopeResolver, manual_entries
from sensor.enforcement.safety import SafetyList


class FakeDeny:
    def __init__(self, store: dict) -> None:
        self.store = store

    def lookup(self, raw: bytes) -> bytes | None:
        key = DenyKey.unpack(raw)
        return self.store[key].pack() if key in self.store else None


class FakeMaps:
    """The EnforcementMaps surface the manager uses, in memory."""

    def __init__(self) -> None:
        self.store: dict[DenyKey, DenyValue] = {}
        self.names: dict[int, str] = {}
        self.safe: set = set()
        self.deny = FakeDeny(self.store)
        self.scopes_rebuilt = 0

    def entries(self):
        return dict(self.store)

    def put(self, key, value) -> bool:
        new = key not in self.store
        self.store[key] = value
        return new

    def remove(self, key) -> bool:
        return self.store.pop(key, None) is not None

    def rule_id(self, name: str) -> int:
        for rid, n in self.names.items():
            if n == name:
                return rid
        rid = len(self.names) + 1
        self.names[rid] = name
        return rid

    def rule_names(self):
        return dict(self.names)

    def set_safety(self, keys) -> None:
        self.safe = set(keys)

    def rebuild_scopes(self, keys=None) -> None:
        self.scopes_rebuilt += 1

    def counters(self):
        return {"denied": 0}


@dataclass
class FakeIndex:
    parents: dict[int, int] = field(default_factory=dict)

    def parent_of(self, cgid: int):
        return self.parents.get(cgid)

    mount = None


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000_000_000

    def __call__(self) -> int:
        return self.now


def req(**kw) -> EnforcementRequest:
    base = dict(rule="C2", action="deny", target="remote", scope="process", ttl_s=10.0,
                mode="enforce", max_entries=1000,
                event={"proc.cgroup_id": 500, "fd.rip": "203.0.113.9", "container.id": "abc123abc123",
                       "evt.time": time.time_ns()},
                cidrs=("203.0.113.9/32",), ports=(443,), protocol="tcp")
    base.update(kw)
    return EnforcementRequest(**base)


@pytest.fixture
def env():
    maps, clock = FakeMaps(), Clock()
    idx = FakeIndex({500: 400, 400: 1})
    mgr = EnforcementManager(maps, SafetyList.build(dns=False, kubernetes_api=False),
                             resolver=ScopeResolver(idx), clock=clock)  # type: ignore[arg-type]
    return mgr, maps, clock


def test_detection_request_becomes_a_process_scoped_entry_with_ttl(env) -> None:
    mgr, maps, clock = env
    res = mgr.submit(req())
    assert res.installed == (DenyKey.build(500, "egress", "tcp", 443, "203.0.113.9/32"),)
    val = maps.store[res.installed[0]]
    assert (val.mode, val.origin, val.expires_ns) == (MODE_ENFORCE, ORIGIN_DETECTION, clock.now + 10 * 10**9)
    assert maps.names[val.rule_id] == "C2"


@pytest.mark.parametrize("scope, expected", [("process", 500), ("container", 500), ("pod", 400), ("node", 0)])
def test_scopes_map_to_cgroups(env, scope: str, expected: int) -> None:
    mgr, maps, _ = env
    (key,) = mgr.submit(req(scope=scope)).installed
    assert key.scope == expected


def test_pod_scope_of_a_host_process_stays_on_its_own_cgroup(env) -> None:
    mgr, _, _ = env
    ev = {"proc.cgroup_id": 500, "container.id": "host", "evt.time": 1}
    (key,) = mgr.submit(req(scope="pod", event=ev)).installed
    assert key.scope == 500


def test_listen_port_target_denies_bind_on_any_address(env) -> None:
    mgr, _, _ = env
    (key,) = mgr.submit(req(target="listen_port", cidrs=(), ports=(4444,))).installed
    assert key == DenyKey.build(500, "ingress", "tcp", 4444, "::/0")


def test_ttl_expiry_by_sweeper(env) -> None:
    mgr, maps, clock = env
    mgr.submit(req())
    clock.now += 9 * 10**9
    assert mgr.sweep() == 0 and len(maps.store) == 1
    clock.now += 2 * 10**9
    assert mgr.sweep() == 1 and maps.store == {}
    assert mgr.stats()["expired"] == 1


def test_repeat_request_extends_ttl_and_keeps_hits(env) -> None:
    mgr, maps, clock = env
    (key,) = mgr.submit(req()).installed
    maps.store[key] = DenyValue(**{**maps.store[key].__dict__, "hits": 5})
    clock.now += 5 * 10**9
    res = mgr.submit(req())
    assert res.refreshed == (key,) and res.installed == ()
    assert maps.store[key].expires_ns == clock.now + 10 * 10**9 and maps.store[key].hits == 5


def test_enforce_entry_is_not_downgraded_by_an_audit_rule(env) -> None:
    mgr, maps, _ = env
    (key,) = mgr.submit(req()).installed
    mgr.submit(req(rule="Audit only", mode="audit"))
    assert maps.store[key].mode == MODE_ENFORCE and maps.names[maps.store[key].rule_id] == "C2"


def test_cap_per_rule(env) -> None:
    mgr, maps, _ = env
    for i in range(5):
        mgr.submit(req(max_entries=3, cidrs=(f"203.0.113.{i}/32",)))
    assert len(maps.store) == 3
    assert mgr.stats()["rejected_cap"] == 2
    # another rule has its own budget
    assert mgr.submit(req(rule="Other", max_entries=3, cidrs=("198.51.100.1/32",))).installed


def test_safety_list_refuses_protected_destinations(env) -> None:
    mgr, maps, _ = env
    res = mgr.submit(req(cidrs=("127.0.0.1/32",)))
    assert res.installed == () and "safety list" in res.rejected
    assert maps.store == {} and mgr.stats()["rejected_safety"] == 1


def test_mode_override_forces_audit(env) -> None:
    _, maps, clock = env
    mgr = EnforcementManager(maps, SafetyList(), mode_override="audit",  # type: ignore[arg-type]
                             resolver=ScopeResolver(FakeIndex()), clock=clock)
    (key,) = mgr.submit(req()).installed
    assert maps.store[key].mode == MODE_AUDIT


def test_bad_requests_are_counted_not_raised(env) -> None:
    mgr, maps, _ = env
    assert mgr.submit(req(event={"fd.rip": "1.2.3.4"})).rejected  # no proc.cgroup_id
    assert mgr.submit(req(action="allow")).rejected
    assert mgr.submit(req(cidrs=(), ports=())).rejected
    assert maps.store == {} and mgr.stats()["rejected_invalid"] == 3


def test_reconcile_installs_static_and_drops_stale_and_expired(env) -> None:
    mgr, maps, clock = env
    static = req(rule="Static", event=None, scope="node", cidrs=("192.0.2.0/24",), ports=(), protocol="any")
    old_static = DenyKey.build(0, "egress", "any", 0, "198.51.100.0/24")
    expired = DenyKey.build(500, "egress", "tcp", 0, "203.0.113.1/32")
    orphan = DenyKey.build(500, "egress", "tcp", 0, "203.0.113.2/32")
    manual = DenyKey.build(0, "egress", "tcp", 25, "::/0")
    maps.store.update({
        old_static: DenyValue(maps.rule_id("Removed rule"), MODE_ENFORCE, ORIGIN_STATIC, 0, 0),
        expired: DenyValue(maps.rule_id("C2"), MODE_ENFORCE, ORIGIN_DETECTION, clock.now - 1, 0),
        orphan: DenyValue(maps.rule_id("Gone"), MODE_ENFORCE, ORIGIN_DETECTION, clock.now + 10**12, 0),
        manual: DenyValue(maps.rule_id("manual"), MODE_ENFORCE, ORIGIN_MANUAL, 0, 0),
    })
    summary = mgr.reconcile([static], known_rules=["Static", "C2"])
    assert set(maps.store) == {DenyKey.build(0, "egress", "any", 0, "192.0.2.0/24"), manual}
    assert summary == {"entries": 2, "static": 1, "expired": 1, "unknown_rule": 1, "stale_static": 1}
    assert maps.store[DenyKey.build(0, "egress", "any", 0, "192.0.2.0/24")].expires_ns == 0
    assert maps.safe and maps.scopes_rebuilt == 1


def test_detection_latency_is_measured(env) -> None:
    mgr, _, _ = env
    for i in range(20):
        mgr.submit(req(cidrs=(f"203.0.113.{i}/32",)))
    lat = mgr.stats()["detect_to_entry"]
    assert lat["count"] == 20 and 0 <= lat["p50_ms"] <= lat["p99_ms"] < 1000


def test_manual_entries_validate_mode() -> None:
    from sensor.enforcement.errors import InvalidEntryError

    with pytest.raises(InvalidEntryError):
        manual_entries(FakeMaps(), [], mode="block", ttl_s=None)  # type: ignore[arg-type]
