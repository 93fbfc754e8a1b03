"""PodCache bounds on deleted pods by age, and what a pod's API object is stripped to."""
from __future__ import annotations

from k8s_apiserver import make_pod

from sensor.k8s.pods import MalformedObjectError, PodCache, pod_meta


def _with_uid(obj: dict, uid: str) -> dict:
    obj["metadata"]["uid"] = uid
    return obj


def test_deleted_pods_are_forgotten_after_the_retention_age() -> None:
    now = [1000.0]
    cache = PodCache(deleted_max=100, deleted_age_s=60.0, clock=lambda: now[0])
    seen: list = []
    cache.subscribe(lambda old, new: seen.append((old, new)))
    obj = _with_uid(make_pod("web", "shop", ip="10.1.0.1"), "u1")
    cache.upsert(obj)
    cache.delete(obj)
    now[0] += 59
    cache.expire()
    assert cache.by_uid("u1").deleted and cache.by_ip("10.1.0.1").uid == "u1"
    now[0] += 2
    cache.expire()
    assert cache.by_uid("u1") is None and cache.by_ip("10.1.0.1") is None
    assert seen[-1][1] is None and cache.stats().evicted == 1


def test_a_malformed_pod_names_itself_and_leaves_the_cache_as_it_was() -> None:
    cache = PodCache()
    bad = make_pod("web", "shop")
    bad["metadata"]["uid"] = "u2"
    bad["spec"]["containers"][0]["ports"] = [{"protocol": "TCP"}]  # no containerPort
    try:
        cache.upsert(bad)
    except MalformedObjectError as exc:
        assert "Pod shop/web" in str(exc)
    else:
        raise AssertionError("malformed pod accepted")
    assert cache.pods() == []


def test_stripped_pod_keeps_what_rules_need() -> None:
    obj = _with_uid(make_pod("ds-x1", "kube-system", owner=("DaemonSet", "agent"), service_account="agent",
                             container_ids={"app": "f" * 64}), "u3")
    pod = pod_meta(obj)
    assert (pod.workload_kind, pod.workload_name, pod.service_account) == ("DaemonSet", "agent", "agent")
    assert pod.containers == {"f" * 12: ("app", "nginx:1.27")} and pod.declares_port("tcp", 80)
    bare = pod_meta(_with_uid(make_pod("solo", "x"), "u4"))
    assert (bare.workload_kind, bare.workload_name) == ("Pod", "solo")


def test_lock_free_readers_never_fail_while_the_writer_churns() -> None:
    import threading

    from sensor.k8s.peers import PeerIndex

    cache = PodCache(deleted_max=50)
    peers = PeerIndex(cache)
    stop, errors, seen = threading.Event(), [], [0]

    def reader() -> None:
        try:
            while not stop.is_set():
                for i in range(200):
                    pod = cache.by_ip(f"10.9.0.{i}")
                    if pod is not None:
                        assert f"10.9.0.{i}" in pod.ips
                        seen[0] += 1
                    peers.lookup(f"10.9.0.{i}", 80)
                    cache.by_uid(f"u{i}")
                cache.pods()
                peers.stats()
        except Exception as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for round_ in range(30):
            for i in range(200):
                obj = _with_uid(make_pod(f"p{i}", "shop", ip=f"10.9.0.{i}", labels={"r": str(round_)}), f"u{i}")
                cache.upsert(obj)
                if i % 3 == round_ % 3:
                    cache.delete(obj)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    assert seen[0] > 0
