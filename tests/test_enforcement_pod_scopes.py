"""Pod, workload and namespace scopes: selectors, resolution to pod cgroups, later pods."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from rules.enforcement import EnforcementRequest
from sensor.enforcement.errors import InvalidEntryError
from sensor.enforcement.keys import ORIGIN_MANUAL
from sensor.enforcement.pod_scopes import PodIdentity, PodScopes, Selector, find_pod_cgroup, parse_selector


def _request(scope: str, event: dict, ttl: float = 60.0) -> EnforcementRequest:
    return EnforcementRequest("r", "deny", "remote", scope, ttl, "enforce", 100, event, cidrs=("203.0.113.5/32",))


def _pod(tmp: Path, ns: str, workload: str, *, qos: str = "burstable") -> tuple[PodIdentity, Path]:
    uid = str(uuid.uuid4())
    path = tmp / "kubepods" / qos / f"pod{uid}"
    path.mkdir(parents=True)
    return PodIdentity(uid, ns, "Deployment", workload, f"{workload}-x"), path


def _web_and_batch(tmp: Path) -> tuple[list[float], PodScopes, Path]:
    """A node with a pod of shop/web and one of shop/batch, on a clock the test moves;
    (clock, scopes, the web pod's cgroup)."""
    clock = [0.0]
    scopes = PodScopes(tmp, clock=lambda: clock[0])
    web, web_dir = _pod(tmp, "shop", "web")
    scopes.note(web)
    scopes.note(_pod(tmp, "shop", "batch")[0])
    return clock, scopes, web_dir


def test_workload_scope_covers_its_pods_now_and_those_that_start_later(tmp_path: Path) -> None:
    clock, scopes, a_dir = _web_and_batch(tmp_path)
    event = {"k8s.ns.name": "shop", "k8s.workload.kind": "Deployment", "k8s.workload.name": "web"}
    assert scopes.resolve(_request("workload", event)) == [a_dir.stat().st_ino]
    assert scopes.started() == []                       # nothing new since
    clock[0] = 10.0
    later = PodIdentity(str(uuid.uuid4()), "shop", "Deployment", "web", "web-y")
    scopes.note(later)                                  # seen by the watch before its cgroup exists
    assert scopes.started() == []
    later_dir = tmp_path / "kubepods" / "besteffort" / f"pod{later.uid}"
    later_dir.mkdir(parents=True)
    ((req, origin),) = scopes.started()
    assert req.cgroups == (str(later_dir),) and req.ttl_s == pytest.approx(50.0) and origin is None
    assert scopes.started() == []                       # once per pod
    clock[0] = 61.0                                     # the group expired: later pods are not covered
    scopes.note(_pod(tmp_path, "shop", "web")[0])
    assert scopes.started() == [] and scopes.groups() == []


def test_namespace_scope_and_events_without_pod_identity(tmp_path: Path) -> None:
    scopes = PodScopes(tmp_path)
    a, a_dir = _pod(tmp_path, "shop", "web")
    b, b_dir = _pod(tmp_path, "shop", "batch")
    c, _ = _pod(tmp_path, "kube-system", "dns")
    for p in (a, b, c):
        scopes.note(p)
    ids = scopes.resolve(_request("namespace", {"k8s.ns.name": "shop"}))
    assert sorted(ids) == sorted([a_dir.stat().st_ino, b_dir.stat().st_ino])
    with pytest.raises(InvalidEntryError, match="k8s.ns.name"):
        scopes.resolve(_request("namespace", {"container.id": "host"}))
    with pytest.raises(InvalidEntryError, match="k8s.workload.name"):
        scopes.resolve(_request("workload", {"k8s.ns.name": "shop"}))


def test_systemd_pod_slices_are_found(tmp_path: Path) -> None:
    uid = str(uuid.uuid4())
    path = tmp_path / "kubepods.slice" / "kubepods-burstable.slice" / f"kubepods-burstable-pod{uid.replace('-', '_')}.slice"
    path.mkdir(parents=True)
    assert find_pod_cgroup(uid, tmp_path) == path
    assert find_pod_cgroup(str(uuid.uuid4()), tmp_path) is None


def test_command_line_selectors() -> None:
    assert parse_selector("pod", "shop/web-1") == Selector("shop", pod_name="web-1")
    assert parse_selector("workload", "shop/web") == Selector("shop", workload_name="web")
    assert parse_selector("workload", "shop/StatefulSet/db") == Selector("shop", "StatefulSet", "db")
    assert parse_selector("selector", "shop/app=web,tier=fe") == Selector("shop", labels=(("app", "web"), ("tier", "fe")))
    assert parse_selector("selector", "app=web").namespace == ""
    for kind, bad in (("pod", "web-1"), ("workload", "a/b/c/d"), ("selector", "shop/app"), ("namespace", "a/b")):
        with pytest.raises(InvalidEntryError, match=f"--{kind}"):
            parse_selector(kind, bad)


def test_a_remembered_group_covers_its_pods_now_and_later_until_dropped(tmp_path: Path) -> None:
    """A stored manual block (a kept group with an origin): the pods it names now and those
    that start later are handed out once each with that origin; a dropped group no more."""
    clock, scopes, now_dir = _web_and_batch(tmp_path)
    assert scopes.started() == []                      # no group yet: nothing to cover
    request = _request("workload", {}, ttl=float("inf"))
    scopes.remember("rec-1", parse_selector("workload", "shop/web"), request, ORIGIN_MANUAL)
    assert scopes.wakeup.is_set()
    ((req, origin),) = scopes.started()
    assert req.cgroups == (str(now_dir),) and origin == ORIGIN_MANUAL and req.ttl_s == float("inf")
    clock[0] = 1e6                                     # an infinite TTL never ends
    later, later_dir = _pod(tmp_path, "shop", "web")
    scopes.note(later)
    assert [(r.cgroups, o) for r, o in scopes.started()] == [((str(later_dir),), ORIGIN_MANUAL)]
    scopes.remember("rec-1", parse_selector("workload", "shop/web"), request, ORIGIN_MANUAL)
    assert len(scopes.started()) == 2 and len(scopes.groups()) == 1   # replaced, not doubled
    scopes.drop_group("rec-1")
    scopes.note(_pod(tmp_path, "shop", "web")[0])
    assert scopes.started() == [] and scopes.groups() == []
