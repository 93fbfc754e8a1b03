"""The pod informer, peer index and watcher with the real `kubernetes` client against the
loopback API server: updates, deletions, 410 relists, outages, bookmarks, pagination,
cut streams, garbage, RBAC denial, memory for 5,000 pods."""
from __future__ import annotations

import logging
import tracemalloc
from pathlib import Path

import pytest
from k8s_apiserver import FakeApiServer, make_endpointslice, make_namespace, make_pod, make_service
from k8s_support import eventually, watcher_for

from sensor.k8s.config import K8sConfig
from sensor.k8s.watcher import K8sWatcher


@pytest.fixture
def api():
    with FakeApiServer(bookmark_interval_s=3600) as server:
        yield server


@pytest.fixture
def started(api, tmp_path):
    watchers = []

    def start(**overrides):
        w = watcher_for(api, tmp_path, **overrides)
        watchers.append(w)
        return w

    yield start
    for w in watchers:
        w.stop()


def _uid(api: FakeApiServer, ns: str, name: str) -> str:
    return api.get("pods", ns, name)["metadata"]["uid"]


def test_lists_only_this_nodes_pods_and_labels_arriving_later_update_them(api, started) -> None:
    api.create("pods", make_pod("web-1", "shop", ip="10.244.1.5", container_ids={"app": "c" * 64}))
    api.create("pods", make_pod("other", "shop", node="node-2", ip="10.244.2.5"))
    w = started()
    assert w.wait_synced(10), w.status
    uid = _uid(api, "shop", "web-1")
    pod = w.pods.by_uid(uid)
    assert pod is not None and dict(pod.labels) == {} and w.pods.by_container("c" * 12) is pod
    assert w.pods.by_ip("10.244.2.5") is None  # another node's pod is not listed
    assert all(r.query.get("fieldSelector") == "spec.nodeName=node-1" for r in api.requests_for("pods"))
    obj = api.get("pods", "shop", "web-1")
    obj["metadata"]["labels"] = {"app": "web", "tier": "front"}
    api.update("pods", obj)
    eventually(lambda: w.pods.by_uid(uid).labels.get("app") == "web", what="labels from the watch")
    assert w.pods.by_ip("10.244.1.5").labels["tier"] == "front"
    assert "connected" in w.status


def test_workload_owner_and_namespace_labels(api, started) -> None:
    api.create("namespaces", make_namespace("shop", {"env": "prod"}))
    api.create("pods", make_pod("web-7d4b9c8f6-x2x9z", "shop", labels={"pod-template-hash": "7d4b9c8f6"},
                                owner=("ReplicaSet", "web-7d4b9c8f6")))
    api.create("pods", make_pod("backup-29123456-abcde", "shop", ip="10.244.1.6",
                                owner=("Job", "backup-29123456")))
    w = started()
    assert w.wait_synced(10), w.status
    web = w.pods.by_uid(_uid(api, "shop", "web-7d4b9c8f6-x2x9z"))
    assert (web.workload_kind, web.workload_name, web.replicaset) == ("Deployment", "web", "web-7d4b9c8f6")
    assert web.namespace_labels["env"] == "prod"
    job = w.pods.by_uid(_uid(api, "shop", "backup-29123456-abcde"))
    assert (job.workload_kind, job.workload_name) == ("CronJob", "backup")
    ns = api.get("namespaces", "", "shop")
    ns["metadata"]["labels"]["env"] = "staging"
    api.update("namespaces", ns)
    eventually(lambda: w.pods.by_uid(web.uid).namespace_labels.get("env") == "staging",
               what="namespace label change on the pod")


def test_a_deleted_pod_stays_resolvable_for_late_events_within_bounds(api, started) -> None:
    for i in range(3):
        api.create("pods", make_pod(f"p{i}", "shop", ip=f"10.244.1.{20 + i}"))
    w = started(deleted_pod_max=2)
    assert w.wait_synced(10)
    uids = [_uid(api, "shop", f"p{i}") for i in range(3)]
    for i in range(3):
        api.delete("pods", "shop", f"p{i}")
    eventually(lambda: w.pods.stats().deletes == 3, what="three deletions")
    assert w.pods.by_uid(uids[0]) is None  # beyond the count bound: forgotten
    for uid, ip in zip(uids[1:], ("10.244.1.21", "10.244.1.22")):
        late = w.pods.by_uid(uid)
        assert late is not None and late.deleted and w.pods.by_ip(ip) is late
    api.create("pods", make_pod("new", "shop", ip="10.244.1.22"))  # the IP is reused: the live pod wins
    eventually(lambda: (p := w.pods.by_ip("10.244.1.22")) is not None and p.name == "new", what="IP reuse")


@pytest.mark.parametrize("as_http", [False, True], ids=["error-event", "http-410"])
def test_relist_after_410_loses_no_pod_and_deletes_what_went_away(api, started, as_http) -> None:
    api.faults.watch_gone_as_http = as_http
    api.create("pods", make_pod("stays", "shop", ip="10.244.1.30"))
    api.create("pods", make_pod("goes", "shop", ip="10.244.1.31"))
    w = started()
    assert w.wait_synced(10)
    goes = _uid(api, "shop", "goes")
    eventually(lambda: api.requests_for("pods", watch=True), what="the first watch")
    api.down()  # while the agent is away: one pod added, one deleted, history compacted
    api.delete("pods", "shop", "goes")
    api.create("pods", make_pod("came", "shop", ip="10.244.1.32"))
    api.compact()
    api.up()
    eventually(lambda: w.pods.by_ip("10.244.1.32") is not None, what="the pod added while away")
    stats = w.stats()["resources"]["pods"]
    assert stats["relists"] >= 1 and stats["lists"] >= 2
    assert w.pods.by_uid(goes).deleted
    assert not w.pods.by_uid(_uid(api, "shop", "stays")).deleted


def test_api_server_down_at_start_then_up_backs_off_then_syncs(api, started) -> None:
    api.create("pods", make_pod("web", "shop"))
    api.down()
    w = started()
    eventually(lambda: w.stats()["resources"]["pods"]["errors"] >= 2, what="failed attempts")
    assert not w.synced() and "unreachable" in w.status
    api.up()
    assert w.wait_synced(10), w.status
    assert w.pods.by_ip("10.244.1.10").name == "web" and "connected" in w.status


def test_bookmarks_advance_the_resource_version_watches_resume_from(api, started) -> None:
    api.create("pods", make_pod("web", "shop"))
    w = started(peers=False, namespaces=False)
    assert w.wait_synced(10)
    eventually(lambda: api.requests_for("pods", watch=True), what="the first watch")
    watch = api.requests_for("pods", watch=True)[0]
    assert watch.query["allowWatchBookmarks"] == "true" and int(watch.query["timeoutSeconds"]) >= 30
    api.create("pods", make_pod("elsewhere", "shop", node="node-2"))  # filtered out: RV moves silently
    api.bookmark()
    want = str(api.resource_version)
    eventually(lambda: w.stats()["resources"]["pods"]["resource_version"] == want, what="the bookmark RV")
    assert w.stats()["resources"]["pods"]["bookmarks"] >= 1
    api.cut_next_event("pods", "clean")
    api.create("pods", make_pod("next", "shop", ip="10.244.1.40"))
    eventually(lambda: len(api.requests_for("pods", watch=True)) >= 2, what="a new watch")
    assert api.requests_for("pods", watch=True)[1].query["resourceVersion"] == want
    eventually(lambda: w.pods.by_ip("10.244.1.40") is not None, what="the event re-sent after the cut")


def test_pagination_lists_every_pod_with_limit_and_continue(api, started) -> None:
    for i in range(7):
        api.create("pods", make_pod(f"p{i}", "shop", ip=f"10.244.1.{50 + i}"))
    w = started(page_size=3)
    assert w.wait_synced(10)
    assert w.pods.stats().pods == 7
    pages = [r for r in api.requests_for("pods", watch=False)]
    assert [r.query.get("limit") for r in pages] == ["3", "3", "3"]
    assert "continue" not in pages[0].query and all("continue" in r.query for r in pages[1:])


@pytest.mark.parametrize("mode", ["abort", "clean"])
def test_a_stream_cut_mid_event_reconnects_and_loses_nothing(api, started, mode) -> None:
    w = started(peers=False, namespaces=False)
    assert w.wait_synced(10)
    eventually(lambda: api.requests_for("pods", watch=True), what="the first watch")
    api.cut_next_event("pods", mode)
    api.create("pods", make_pod("cut", "shop", ip="10.244.1.60"))
    eventually(lambda: w.pods.by_ip("10.244.1.60") is not None, what="the pod whose event was cut")
    stats = w.stats()["resources"]["pods"]
    assert stats["stream_cuts"] == 1 and stats["relists"] == 0


def test_garbage_from_the_server_is_counted_and_named_never_fatal(api, started, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="netvigil.k8s")
    w = started(peers=False, namespaces=False)
    assert w.wait_synced(30)
    eventually(lambda: api.requests_for("pods", watch=True), what="the first watch")
    api.send_garbage("pods", b'{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"bad","namespace":"x"}}}')
    eventually(lambda: w.stats()["resources"]["pods"]["malformed"] == 1, what="the malformed pod", timeout=30)
    assert "Pod x/bad" in caplog.text
    api.send_garbage("pods", b"<html>proxy error</html>")
    eventually(lambda: w.stats()["resources"]["pods"]["malformed"] == 2, what="the unparseable line", timeout=30)
    assert "unparseable event" in caplog.text and "proxy error" in caplog.text
    api.create("pods", make_pod("fine", "shop", ip="10.244.1.70"))
    eventually(lambda: w.pods.by_ip("10.244.1.70") is not None, what="a good pod after the garbage", timeout=30)


def test_rbac_denial_degrades_with_a_clear_status_logged_once(api, started, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="netvigil.k8s")
    api.forbid("pods")
    w = started(peers=False, namespaces=False)
    eventually(lambda: w.stats()["resources"]["pods"]["errors"] >= 3, what="repeated denials")
    assert w.status.startswith("no API access: list/watch pods forbidden by RBAC (403)")
    assert 'cannot list resource "pods"' in w.status and not w.api_expected()
    assert sum("forbidden by RBAC" in r.getMessage() for r in caplog.records) == 1
    api.forbid("pods", False)  # RBAC fixed: the watcher recovers on its own
    assert w.wait_synced(10) and w.api_expected()


def test_services_and_endpointslices_name_the_peer(api, started) -> None:
    api.create("pods", make_pod("web-7d4b9c8f6-abcde", "shop", ip="10.244.1.10", labels={
        "pod-template-hash": "7d4b9c8f6"}, owner=("ReplicaSet", "web-7d4b9c8f6")))
    api.create("services", make_service("web", "shop", cluster_ips=["10.96.0.10", "fd00::10"]))
    api.create("services", make_service("kubernetes", "default", cluster_ip="10.96.0.1",
                                        ports=[("https", 443, 6443)]))
    api.create("endpointslices", make_endpointslice("web-x1", "shop", "web", [
        ("10.244.1.10", "web-7d4b9c8f6-abcde"), ("10.244.3.9", "web-7d4b9c8f6-zzzzz")]))
    w = started()
    assert w.wait_synced(10), w.status
    for ip in ("10.96.0.10", "fd00::10"):
        svc = w.peers.lookup(ip, 80)
        assert (svc.kind, svc.svc_name, svc.svc_namespace) == ("service", "web", "shop")
    assert w.peers.lookup("10.96.0.1", 443).svc_name == "kubernetes"
    local = w.peers.lookup("10.244.1.10", 8080)
    assert (local.kind, local.name, local.svc_name, local.workload_name) == (
        "pod", "web-7d4b9c8f6-abcde", "web", "web")
    remote = w.peers.lookup("10.244.3.9")
    assert (remote.name, remote.svc_name, remote.workload_name) == ("web-7d4b9c8f6-zzzzz", "web", None)
    api.delete("endpointslices", "shop", "web-x1")
    eventually(lambda: w.peers.lookup("10.244.3.9") is None, what="the slice's removal")
    assert w.peers.lookup("10.244.1.10").svc_name is None  # still this node's pod, no service now


def test_5000_pods_listed_with_bounded_memory(api, started) -> None:
    for i in range(5000):
        api.create("pods", make_pod(f"p{i}", f"ns{i % 20}", ip=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
                                    labels={"app": f"a{i % 50}", "pod-template-hash": "abc"},
                                    owner=("ReplicaSet", f"a{i % 50}-abc"),
                                    container_ids={"app": f"{i:064x}"}))
    tracemalloc.start()
    try:
        w = started(peers=False, namespaces=False)
        assert w.wait_synced(60), w.status
        snapshot = tracemalloc.take_snapshot()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert w.pods.stats().pods == 5000
    retained = sum(s.size for s in snapshot.filter_traces(
        [tracemalloc.Filter(True, "*/sensor/k8s/*")]).statistics("filename"))
    assert retained < 5000 * 4096, f"{retained / 5000:.0f} bytes per pod kept"  # generous bound
    assert peak < 200 << 20


def test_without_credentials_or_when_disabled_it_says_so(tmp_path) -> None:
    w = K8sWatcher(K8sConfig(), env={"HOME": str(tmp_path)})
    assert not w.start() and w.status.startswith("no API access: not in a cluster")
    assert "runtime metadata only" in w.status and not w.api_expected()
    off = K8sWatcher(K8sConfig(enabled="false"), env={})
    assert not off.start() and "disabled" in off.status
    bad = tmp_path / "kubeconfig"
    bad.write_text("clusters: [")
    broken = K8sWatcher(K8sConfig(kubeconfig=str(bad)), env={})
    assert not broken.start() and f"kubeconfig {bad}" in broken.status


def test_an_expired_continue_token_restarts_the_list(api, started) -> None:
    for i in range(5):
        api.create("pods", make_pod(f"p{i}", "shop", ip=f"10.244.1.{80 + i}"))
    api.faults.expire_next_continue = True
    w = started(page_size=2, peers=False, namespaces=False)
    assert w.wait_synced(10)
    assert w.pods.stats().pods == 5 and w.stats()["resources"]["pods"]["relists"] == 1
    pages = api.requests_for("pods", watch=False)
    assert "continue" in pages[1].query and "continue" not in pages[2].query  # restarted from scratch


def test_resync_relists_periodically_and_a_malformed_list_item_is_named(api, started, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="netvigil.k8s")
    api.create("pods", make_pod("web", "shop"))
    bad = make_pod("broken", "shop", ip="10.244.1.90")
    bad["spec"]["containers"][0]["ports"] = [{"protocol": "TCP"}]  # containerPort missing
    api.create("pods", bad)
    w = started(resync_s=0.3, peers=False, namespaces=False, watch_timeout_s=1.0)
    assert w.wait_synced(10)
    eventually(lambda: w.stats()["resources"]["pods"]["lists"] >= 2, what="a resync list")
    assert w.pods.by_ip("10.244.1.10").name == "web" and w.pods.by_ip("10.244.1.90") is None
    assert "Pod shop/broken: malformed pod" in caplog.text


def test_readiness_waits_for_the_sync_but_not_for_an_api_that_denies_access(tmp_path) -> None:
    with FakeApiServer() as api:
        api.forbid("pods")
        w = watcher_for(api, tmp_path)
        try:
            eventually(lambda: w.status.startswith("no API access"), what="RBAC denial")
            ok, why = w.readiness()
            assert ok and "runtime metadata only" in why
            api.forbid("pods", False)
            eventually(lambda: w.readiness() == (True, "caches synced"), what="sync after RBAC fixed")
        finally:
            w.stop()
