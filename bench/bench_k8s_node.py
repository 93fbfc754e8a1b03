"""Kubernetes enrichment on the node: what it costs per event and how soon a new pod's
labels are on its events. Prints figures only (as root: loads the sensor).

- pipeline capacity with and without enrichment: the same bursts of UDP connects the
  sensor benchmark drains (bench_sensor.py pipeline), decoded and handed to the
  pipeline, once without and once with the enricher attached (pod cache of 200 pods,
  peer index of 2,000 Services, rounds interleaved); the difference is the per-event
  cost of `K8sEnricher.join` on the hot path;
- join cost per event in isolation: an event of a pod process to a Service ClusterIP
  (peer found), to an address no peer has, and a host event;
- time from a pod's first process to its labels on events when the pod reaches the API
  cache later (the hold queue): measured with the real decoder/pipeline path driven by
  `tick()` every 10 ms, the pod cache updated from another thread after a delay.

    python bench/bench_k8s_node.py [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import timeit
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from bench_sensor import _burst, _timed  # noqa: E402
from k8s_apiserver import make_pod, make_service  # noqa: E402
from sensor.agent import Sensor, SensorOptions  # noqa: E402
from sensor.k8s.enrich import K8sEnricher  # noqa: E402
from sensor.k8s.peers import PeerIndex  # noqa: E402
from sensor.k8s.pods import PodCache  # noqa: E402
from sensor.k8s.runtime import RuntimeMetadata, RuntimeRoots  # noqa: E402
from sensor.pipeline import Pipeline  # noqa: E402
from sensor.process_table import ProcessRecord  # noqa: E402


def _pod(name: str, uid: str | None = None, **kw) -> dict:
    pod = make_pod(name, "shop", **kw)
    pod["metadata"]["uid"] = uid or str(uuid.uuid4())
    return pod


def _caches(pods: int = 200, services: int = 2000) -> tuple[PodCache, PeerIndex]:
    cache = PodCache()
    peers = PeerIndex(cache)
    for i in range(pods):
        cache.upsert(_pod(f"p{i}", ip=f"10.244.{i // 250}.{i % 250 + 1}"))
    for i in range(services):
        peers.upsert_service(make_service(f"s{i}", "shop", cluster_ip=f"10.96.{i // 250}.{i % 250 + 1}"))
    return cache, peers


def capacity(count: int, rounds: int) -> tuple[float, float]:
    """Median events/s of the sensor + pipeline without and with enrichment."""
    pages = 1 << max(10, (count * 128 // 4096).bit_length())
    received = [0]

    def consumer(_ev: dict) -> None:
        received[0] += 1

    cache, peers = _caches()
    enricher = K8sEnricher(RuntimeMetadata(RuntimeRoots(prefix="/nonexistent")), cache, peers,
                           api_expected=lambda: True)
    plain = Pipeline(hostname="bench", on_event=consumer)
    joined = Pipeline(hostname="bench", on_event=consumer, k8s=enricher)
    sensor = Sensor(plain, SensorOptions(ringbuf_pages=pages))
    sensor.start()
    without, with_ = [], []
    try:
        for _ in range(rounds):
            sensor.on_event = plain
            sensor.attach_enricher(None)
            sensor.drain()
            _burst(count)
            without.append(_timed(sensor.drain, received))
            sensor.on_event = joined
            sensor.attach_enricher(enricher)
            _burst(count)
            with_.append(_timed(sensor.drain, received))
    finally:
        sensor.close()
    return statistics.median(without), statistics.median(with_)


def join_costs() -> dict[str, float]:
    """ns per K8sEnricher.join for three kinds of events (best of 5 runs)."""
    cache, peers = _caches()
    enricher = K8sEnricher(None, cache, peers)
    base = {"proc.pid": 1, "container.id": "abcdef012345", "k8s.pod.uid": "u", "evt.type": "connect",
            "fd.lport": 40000, "fd.rport": 80}
    cases = {
        "pod -> Service ClusterIP (peer found)": {**base, "fd.rip": "10.96.0.1"},
        "pod -> address no peer has": {**base, "fd.rip": "203.0.113.9"},
        "host process, no remote (exec, ...)": {"proc.pid": 1, "container.id": "host", "evt.type": "execve"},
    }
    out = {}
    for name, ev in cases.items():
        join = enricher.join
        n = 200_000
        best = min(timeit.repeat(lambda: join(ev), number=n, repeat=5)) / n
        out[name] = best * 1e9
    return out


def pipeline_call_costs() -> tuple[float, float, float]:
    """ns per Pipeline call on a realistic network event (35 fields, a host process's UDP
    connect to 127.0.0.1), without and with the enricher; and the pod event variant."""
    cache, peers = _caches()
    enricher = K8sEnricher(None, cache, peers)
    sink = [0]

    def consumer(_ev: dict) -> None:
        sink[0] += 1

    plain = Pipeline(hostname="bench", on_event=consumer)
    joined = Pipeline(hostname="bench", on_event=consumer, k8s=enricher)
    ev = {f"proc.f{i}": i for i in range(22)}
    ev.update({"evt.type": "connect", "evt.num": 1, "evt.time": 1, "container.id": "host", "fd.lip": "127.0.0.1",
               "fd.lport": 40000, "fd.rip": "127.0.0.1", "fd.rport": 1024, "fd.l4proto": "udp",
               "evt.res": "SUCCESS", "evt.rawres": 0, "thread.tid": 1, "fd.num": 3})
    n = 200_000
    a = min(timeit.repeat(lambda: plain(ev), number=n, repeat=7)) / n * 1e9
    b = min(timeit.repeat(lambda: joined(ev), number=n, repeat=7)) / n * 1e9
    pod_ev = {**ev, "container.id": "abcdef012345", "k8s.pod.uid": "u", "fd.rip": "10.244.9.9"}
    c = min(timeit.repeat(lambda: joined(pod_ev), number=n, repeat=7)) / n * 1e9
    return a, b, c


def hold_latency(rounds: int, delay_s: float) -> list[float]:
    """ms from a pod's first event to that event released with labels, the pod reaching
    the cache `delay_s` after its first process."""
    out = []
    for _ in range(rounds):
        cache = PodCache()
        enricher = K8sEnricher(None, cache, None, api_expected=lambda: True, hold_s=2.0)
        uid = str(uuid.uuid4())
        released: list[tuple[float, dict]] = []
        pipeline = Pipeline(hostname="bench", on_event=lambda ev: released.append((time.monotonic(), ev)),
                            k8s=enricher)
        record = ProcessRecord("e:1:1", 1, 0, None, "app", "app", "/app", [], 0, 0, 1, "abcdef012345", 1,
                               meta={"k8s.pod.uid": uid})
        enricher.annotate(record)
        first = time.monotonic()
        pipeline({**record.meta, "evt.type": "execve", "evt.num": 1})
        pod = _pod("late", uid, labels={"app": "late"})
        threading.Timer(delay_s, cache.upsert, args=(pod,)).start()
        while not released:
            time.sleep(0.01)
            pipeline.tick()
        at, ev = released[0]
        assert ev.get("k8s.pod.labels") == {"app": "late"}
        out.append((at - first) * 1e3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count, rounds = (100_000, 3) if args.quick else (400_000, 5)
    print("netvigil kubernetes node enrichment benchmark")
    without, with_ = capacity(count, rounds)
    print(f"pipeline capacity: {without:,.0f} events/s without enrichment, {with_:,.0f} with "
          f"({(with_ / without - 1) * 100:+.1f}%; {count:,} events per round, {rounds} rounds interleaved; "
          f"{1e9 / with_ - 1e9 / without:+.0f} ns per event)")
    a, b, c = pipeline_call_costs()
    print(f"pipeline call, host event: {a:.0f} ns without enrichment, {b:.0f} ns with ({b - a:+.0f} ns); "
          f"pod event to a non-peer address: {c:.0f} ns")
    for name, ns in join_costs().items():
        print(f"join: {name}: {ns:.0f} ns")
    lat = hold_latency(5 if args.quick else 20, 0.2)
    print(f"pod known 200 ms after its first event: labels on its events after median "
          f"{statistics.median(lat):.0f} ms, max {max(lat):.0f} ms (hold released by the 10 ms tick)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
