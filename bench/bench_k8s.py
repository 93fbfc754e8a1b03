"""Kubernetes caches: memory per 1,000 pods and per 10,000 endpoints (through the real
client and informer from the loopback API server), lookup cost per event, and the time
from a pod's creation on the server to its labels in the cache. Prints figures only.

    python bench/bench_k8s.py [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import timeit
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from k8s_apiserver import FakeApiServer, make_endpointslice, make_pod, make_service  # noqa: E402
from k8s_support import watcher_for  # noqa: E402

K8S_CODE = [tracemalloc.Filter(True, "*/sensor/k8s/*")]


def _ip(i: int, base: int = 10) -> str:
    return f"{base}.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"


def _pod(i: int, node: str = "node-1") -> dict:
    return make_pod(f"app{i % 40}-5f7c9d8b6-{i:05d}", f"team{i % 25}", node=node, ip=_ip(i),
                    labels={"app": f"app{i % 40}", "pod-template-hash": "5f7c9d8b6", "tier": "backend",
                            "version": f"v{i % 3}"},
                    owner=("ReplicaSet", f"app{i % 40}-5f7c9d8b6"), container_ids={"app": f"{i:064x}"},
                    containers=[{"name": "app", "image": f"ghcr.io/acme/app{i % 40}:1.{i % 9}",
                                 "ports": [{"containerPort": 8080, "protocol": "TCP"},
                                           {"containerPort": 9090, "protocol": "TCP"}]}])


def retained(api: FakeApiServer, tmp: Path, **overrides) -> tuple[int, object]:
    """Bytes allocated by sensor/k8s and still held once the watcher has synced."""
    tracemalloc.start()
    try:
        w = watcher_for(api, tmp, **overrides)
        if not w.wait_synced(300):
            raise SystemExit(f"not synced: {w.status}")
        time.sleep(0.2)
        snap = tracemalloc.take_snapshot().filter_traces(K8S_CODE)
    finally:
        tracemalloc.stop()
    return sum(s.size for s in snap.statistics("filename")), w


def bench_pods(n: int, tmp: Path) -> object:
    with FakeApiServer() as api:
        for i in range(n):
            api.create("pods", _pod(i))
        size, w = retained(api, tmp, peers=False, namespaces=False)
        w.stop()
    print(f"pods: {n} listed ({w.stats()['resources']['pods']['pages']} pages); "
          f"memory {size / n * 1000 / 1e6:.2f} MB per 1,000 pods ({size / n:.0f} B/pod)")
    return w


def bench_endpoints(n_endpoints: int, per_slice: int, tmp: Path) -> object:
    with FakeApiServer() as api:
        for s in range(n_endpoints // per_slice):
            api.create("services", make_service(f"svc{s}", f"team{s % 25}", cluster_ip=_ip(s, 172)))
            api.create("endpointslices", make_endpointslice(
                f"svc{s}-abcde", f"team{s % 25}", f"svc{s}",
                [(_ip(s * per_slice + e, 11), f"svc{s}-6d5f8-{e:05d}") for e in range(per_slice)]))
        size, w = retained(api, tmp, namespaces=False)
        w.stop()
    st = w.peers.stats()
    print(f"peers: {st.services} services, {st.endpoints} endpoints in {st.slices} slices; memory "
          f"{size / st.endpoints * 10000 / 1e6:.2f} MB per 10,000 endpoints (services included)")
    return w


def bench_lookups(pods_w, peers_w) -> None:
    pods, peers = pods_w.pods, peers_w.peers
    uid, endpoint_ip = next(iter(pods.pods())).uid, _ip(33, 11)
    cases = {
        "pods.by_uid hit": lambda: pods.by_uid(uid),
        "pods.by_uid miss": lambda: pods.by_uid("no-such-uid"),
        "pods.by_ip hit": lambda: pods.by_ip("10.0.0.7"),
        "peers.lookup service IP": lambda: peers.lookup("172.0.0.3", 80),
        "peers.lookup endpoint IP": lambda: peers.lookup(endpoint_ip, 8080),
        "peers.lookup miss": lambda: peers.lookup("192.0.2.1", 443),
    }
    for name, fn in cases.items():
        number = 200_000
        best = min(timeit.repeat(fn, number=number, repeat=5)) / number
        print(f"lookup: {name}: {best * 1e9:.0f} ns")


def bench_latency(rounds: int, tmp: Path) -> None:
    with FakeApiServer() as api:
        w = watcher_for(api, tmp, peers=False, namespaces=False)
        w.wait_synced(10)
        arrived: dict[str, float] = {}
        done = threading.Event()

        def on_change(_old, new) -> None:
            if new is not None and new.labels.get("bench") == "yes":
                arrived[new.name] = time.perf_counter()
                done.set()

        w.pods.subscribe(on_change)
        delays = []
        for i in range(rounds):
            done.clear()
            name = f"lat-{i}"
            pod = make_pod(name, "bench", ip=_ip(i, 12), labels={"bench": "yes"})
            t0 = time.perf_counter()
            api.create("pods", pod)
            done.wait(5)
            delays.append(arrived[name] - t0)
        w.stop()
    delays.sort()
    print(f"latency: pod created on the server -> labels in the cache: median "
          f"{statistics.median(delays) * 1e3:.2f} ms, p95 {delays[int(len(delays) * 0.95) - 1] * 1e3:.2f} ms "
          f"({rounds} pods, loopback)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    args = parser.parse_args()
    n_pods, n_eps, rounds = (1000, 2000, 20) if args.quick else (10_000, 10_000, 200)
    with tempfile.TemporaryDirectory() as tmp:
        pods_w = bench_pods(n_pods, Path(tmp))
        peers_w = bench_endpoints(n_eps, 20, Path(tmp))
        bench_lookups(pods_w, peers_w)
        bench_latency(rounds, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
