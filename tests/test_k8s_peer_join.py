"""Who is on the other end, as decoded events carry it: the sensor's decoder joined with a
real PeerIndex and PodCache through `Sensor.attach_enricher` (no BPF: records packed as
bpf/sensor.h lays them out, decoded by the sensor's own decoder), and the pipeline's
tick that tells the decoder when the index changed."""
from __future__ import annotations

import pytest
from k8s_apiserver import make_pod, make_service
from test_decoding import net

from rules.event import Event
from sensor.agent import Sensor
from sensor.k8s.enrich import K8sEnricher
from sensor.k8s.peers import PeerIndex
from sensor.k8s.pods import PodCache
from sensor.pipeline import Pipeline
from sensor.process_table import ProcessRecord

PID = 4242


@pytest.fixture
def node():
    events: list[dict] = []
    pods = PodCache()
    peers = PeerIndex(pods)
    peers.upsert_service(make_service("backend", "shop", cluster_ip="10.96.0.20", ports=[("http", 8080, 8080)]))
    enricher = K8sEnricher(None, pods, peers)
    pipeline = Pipeline(hostname="node-1", on_event=events.append, k8s=enricher)
    sensor = Sensor(pipeline)
    sensor.table.add(ProcessRecord("b:4242:5", PID, 1, None, "python3", "python3", "/usr/bin/python3",
                                   ["client.py"], 0, 0, 1, "host", 5))
    sensor.attach_enricher(enricher)
    pipeline.tick()

    def connect(rip: str, rport: int = 8080, op: str = "connect") -> dict:
        ev = sensor.decoder.decode(net(op, pid=PID, stype=1, raddr=rip, rport=rport))
        assert ev is not None
        pipeline(ev)
        return events[-1]
    return sensor, peers, pipeline, connect, pods


def _peer(ev: dict) -> dict:
    return {k: v for k, v in ev.items() if k.startswith("k8s.peer.")}


def test_connect_to_a_service_ip_carries_the_service_every_time(node) -> None:
    _sensor, _peers, _pipeline, connect, _pods = node
    for _ in range(3):   # the first event and the cached ones alike
        ev = connect("10.96.0.20")
        assert _peer(ev) == {"k8s.peer.kind": "service", "k8s.peer.name": "backend", "k8s.peer.ns.name": "shop",
                             "k8s.peer.svc.name": "backend", "k8s.peer.svc.ns.name": "shop"}
        assert ev["fd.sip"] == "10.96.0.20"
    assert _peer(connect("203.0.113.9")) == {}
    assert _peer(connect("203.0.113.9")) == {}


def test_an_address_that_becomes_a_service_later_carries_it_after_the_next_tick(node) -> None:
    _sensor, peers, pipeline, connect, _pods = node
    assert _peer(connect("10.96.0.30")) == {}          # no peer yet: remembered as such
    svc = make_service("late", "shop", cluster_ip="10.96.0.30")
    peers.upsert_service(svc)
    pipeline.tick()                                    # the poll loop's tick tells the decoder
    assert connect("10.96.0.30")["k8s.peer.svc.name"] == "late"
    peers.delete_service(svc)
    pipeline.tick()
    assert _peer(connect("10.96.0.30")) == {}


def test_accept_from_a_pod_of_this_node_names_the_pod(node) -> None:
    _sensor, _peers, pipeline, connect, pods = node
    pod = make_pod("web-1", "shop", ip="10.244.1.7", owner=("ReplicaSet", "web-5d8f9c"),
                   labels={"pod-template-hash": "5d8f9c"})
    pod["metadata"]["uid"] = "6f1c1f7e-0000-4000-8000-000000000001"
    pods.upsert(pod)
    pipeline.tick()
    ev = connect("10.244.1.7", 51000, op="accept")
    assert (ev["k8s.peer.kind"], ev["k8s.peer.pod.name"], ev["k8s.peer.workload.name"]) == ("pod", "web-1", "web")
    assert ev["fd.cip"] == "10.244.1.7"


def test_an_event_from_elsewhere_gets_the_peer_too(node) -> None:
    sensor, _peers, _pipeline, _connect, _pods = node
    verdict = sensor.enrich({"evt.type": "netvigil_verdict", "proc.pid": PID, "fd.rip": "10.96.0.20",
                             "fd.rport": 8080, "netvigil.verdict": "deny"})
    assert verdict["k8s.peer.svc.name"] == "backend" and verdict["proc.exepath"] == "/usr/bin/python3"


def test_declared_port_is_known_on_listen_and_bind_of_a_pod_process() -> None:
    base = {"k8s.pod.ports": [8080, 9090], "fd.lip": "0.0.0.0", "fd.typechar": "4"}
    assert Event({**base, "evt.type": "listen", "fd.lport": 8080})["k8s.pod.lport_declared"] is True
    assert Event({**base, "evt.type": "bind", "fd.lport": 4444})["k8s.pod.lport_declared"] is False
    assert Event({**base, "evt.type": "connect", "fd.lport": 8080, "fd.rip": "10.0.0.1"}).get(
        "k8s.pod.lport_declared") is None
    assert Event({"evt.type": "listen", "fd.lport": 8080}).get("k8s.pod.lport_declared") is None  # host process
