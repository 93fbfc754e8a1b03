"""Live, end to end, with the real `kubernetes` client against the loopback API server:
pods are runc containers laid out as containerd's CRI lays them out; their labels, owners
and the cluster's Services come from the API; the shipped rules decide.

- an egress rule scoped by pod label fires for the labelled pod, not for its unlabelled
  neighbour, even when the pod reaches the API cache only after its first event (the
  events wait, then carry the labels);
- a connect() to a Service ClusterIP (an address on the loopback of a netns the test
  made) carries the Service's name, and the shipped API-server rule fires for it;
- the alert of a pod's event, delivered by the real Slack and falcosidekick sinks to
  HTTP receivers on loopback, names the pod and its namespace (Slack's Pod field,
  falcosidekick's output_fields k8s.ns.name / k8s.pod.name).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/: the API server fixture

from k8s_apiserver import FakeApiServer, make_service  # noqa: E402
from k8s_support import watcher_for  # noqa: E402
from rules.loader import load_rules  # noqa: E402
from test_alerts_support import Receiver  # noqa: E402

from alerts.secrets import Redactor  # noqa: E402
from alerts.sinks import falcosidekick, slack  # noqa: E402
from sensor.k8s.enrich import K8sEnricher  # noqa: E402
from sensor.k8s.runtime import RuntimeMetadata  # noqa: E402
from sensor.pipeline import Pipeline  # noqa: E402
from tests.k8s_pods import PodHost  # noqa: E402

PID = os.getpid()
EXTERNAL = "203.0.113.5"      # outside every internal network: "egress"
API_IP = "10.96.0.1"          # the `kubernetes` Service's ClusterIP
RULES = Path(__file__).resolve().parents[2] / "rules" / "default"
SERVER = textwrap.dedent(f"""
    import socket, threading
    def serve(addr):
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(addr); s.listen(16)
        while True:
            c, _ = s.accept(); c.close()
    for addr in (("{EXTERNAL}", 443), ("{API_IP}", 443)):
        threading.Thread(target=serve, args=(addr,), daemon=True).start()
    print("READY", flush=True)
    threading.Event().wait()
""")
CLIENT = """
import socket, sys, time
time.sleep(float(sys.argv[2]))
socket.create_connection((sys.argv[1], 443), timeout=2).close()
print("OK")
"""


@pytest.fixture
def cluster(tmp_path: Path, live) -> Iterator[tuple[PodHost, str, FakeApiServer, K8sEnricher, Pipeline, list]]:
    host = PodHost(tmp_path / "node")
    api = FakeApiServer()
    server = watcher = None
    previous = live.sensor.on_event
    try:
        ns = host.netns(f"nve{PID}", [f"{EXTERNAL}/32", f"{API_IP}/32"])
        server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER],
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "READY"
        api.create("services", make_service("kubernetes", "default", cluster_ip=API_IP,
                                            ports=[("https", 443, 6443)]))
        watcher = watcher_for(api, tmp_path)
        assert watcher.wait_synced(10), watcher.status
        enricher = K8sEnricher(RuntimeMetadata(host.roots), watcher.pods, watcher.peers,
                               api_expected=watcher.api_expected, hold_s=3.0)
        alerts: list = []
        pipeline = Pipeline(hostname="node-1", ruleset=load_rules([RULES]), on_event=live.events.append,
                            k8s=enricher, on_alert=alerts.append)
        live.sensor.attach_enricher(enricher)
        live.sensor.on_event = pipeline
        yield host, ns, api, enricher, pipeline, alerts
    finally:
        live.sensor.on_event = previous
        live.sensor.attach_enricher(None)
        if watcher is not None:
            watcher.stop()
        if server is not None:
            server.kill()
            server.wait()
        host.close()
        api.close()


def _run(pod, live, pipeline, dest: str, delay: float = 0.0, name: str = "app") -> None:
    container = pod.start(["/usr/bin/python3", "-c", CLIENT, dest, str(delay)], name=name,
                          image="registry.example/shop/" + name + ":1.0")
    deadline = time.monotonic() + 20
    while container.proc.poll() is None and time.monotonic() < deadline:
        live.sensor.poll(50)
        pipeline.tick()
    code, out, err = container.wait()
    assert code == 0 and out.strip() == "OK", err


def _settle(live, pipeline, enricher, seconds: float = 4.0) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end and (enricher.pending or time.monotonic() < end - seconds + 0.5):
        live.sensor.poll(50)
        pipeline.tick()


def test_label_scoped_egress_rule_fires_for_the_labelled_pod_not_its_neighbour(cluster, live) -> None:
    host, ns, api, enricher, pipeline, alerts = cluster
    labelled = host.pod("checkout-6b7c8-abcde", "shop", labels={"app": "checkout", "netvigil.io/egress-policy": "strict"},
                        owner=("ReplicaSet", "checkout-6b7c8"), netns=ns)
    neighbour = host.pod("cart-5f6d7-fghij", "shop", labels={"app": "cart"}, owner=("ReplicaSet", "cart-5f6d7"),
                         netns=ns)
    api.create("pods", neighbour.api_object("node-1"))
    # the labelled pod reaches the API server only after its container has started
    labelled_start = time.monotonic()
    container = labelled.start(["/usr/bin/python3", "-c", CLIENT, EXTERNAL, "0.3"], name="checkout",
                               image="registry.example/shop/checkout:1.0")
    first_poll_end = time.monotonic() + 0.2
    while time.monotonic() < first_poll_end:
        live.sensor.poll(20)
        pipeline.tick()
    assert labelled.uid in enricher.pending            # its first events wait for the pod
    api.create("pods", labelled.api_object("node-1"))
    while container.proc.poll() is None and time.monotonic() < labelled_start + 20:
        live.sensor.poll(50)
        pipeline.tick()
    assert container.wait()[0] == 0
    _run(neighbour, live, pipeline, EXTERNAL, name="cart")
    _settle(live, pipeline, enricher)

    egress = [a for a in alerts if a.rule == "Unauthorized Egress Connection"]
    pods = [a.output_fields.get("k8s.pod.name") for a in egress]
    assert pods == ["checkout-6b7c8-abcde"], [a.rule for a in alerts]
    fields = egress[0].output_fields
    assert fields["k8s.ns.name"] == "shop" and fields["container.image.repository"] == "registry.example/shop/checkout"
    mine = sorted((e for e in live.events if e.get("k8s.pod.uid") == labelled.uid), key=lambda e: e["evt.num"])
    assert mine and all(e.get("k8s.pod.labels", {}).get("netvigil.io/egress-policy") == "strict" for e in mine)
    assert all(e.get("k8s.deployment.name") == "checkout" for e in mine)
    assert enricher.stats().events_held >= 1 and enricher.stats().events_without_pod_metadata == 0


def test_connect_to_a_service_cluster_ip_carries_the_service(cluster, live) -> None:
    host, ns, api, enricher, pipeline, alerts = cluster
    pod = host.pod("report-7d8e9-klmno", "shop", owner=("ReplicaSet", "report-7d8e9"), netns=ns)
    api.create("pods", pod.api_object("node-1"))
    deadline = time.monotonic() + 5
    while enricher.pods.by_uid(pod.uid) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    _run(pod, live, pipeline, API_IP, name="report")
    _settle(live, pipeline, enricher, 1.0)
    conns = [e for e in live.events if e.get("evt.type") == "connect" and e.get("fd.rip") == API_IP
             and e.get("k8s.pod.uid") == pod.uid]
    assert conns, "no connect to the ClusterIP seen"
    assert conns[0]["k8s.peer.svc.name"] == "kubernetes" and conns[0]["k8s.peer.svc.ns.name"] == "default"
    assert conns[0]["k8s.peer.kind"] == "service"
    fired = [a for a in alerts if a.rule == "Unexpected Kubernetes API Server Connection from Pod"]
    assert fired and fired[0].output_fields["k8s.pod.name"] == "report-7d8e9-klmno"


def test_slack_and_falcosidekick_name_the_pod_and_namespace_of_an_alert(cluster, live) -> None:
    host, ns, api, enricher, pipeline, alerts = cluster
    pod = host.pod("checkout-6b7c8-pqrst", "shop", labels={"netvigil.io/egress-policy": "strict"},
                   owner=("ReplicaSet", "checkout-6b7c8"), netns=ns)
    api.create("pods", pod.api_object("node-1"))
    _run(pod, live, pipeline, EXTERNAL, delay=0.3, name="checkout")
    _settle(live, pipeline, enricher, 1.0)
    alert = next(a for a in alerts if a.rule == "Unauthorized Egress Connection"
                 and a.output_fields.get("k8s.pod.name") == pod.name)
    hook, fsk = Receiver(), Receiver()
    try:
        settings = slack.parse_settings({"url_env": "SLACK_URL"}, "t", {"SLACK_URL": hook.url + "services/T/B/X"})
        slack.SlackSink("oncall", settings, timeout_s=5, redactor=Redactor()).deliver([alert])
        settings = falcosidekick.parse_settings({"url": fsk.url.rstrip("/")}, "t", {})
        falcosidekick.FalcosidekickSink("fsk", settings, timeout_s=5, redactor=Redactor()).deliver([alert])
        message = hook.wait_for(1)[0].json()
        payload = fsk.wait_for(1)[0].json()
    finally:
        hook.stop()
        fsk.stop()
    fields = [f["text"] for f in message["attachments"][0]["blocks"][1]["fields"]]
    assert "*Pod*\nshop/checkout-6b7c8-pqrst" in fields, fields
    assert any(f.startswith("*Container*\ncheckout (") and f.endswith("registry.example/shop/checkout:1.0")
               for f in fields), fields
    out = payload["output_fields"]
    assert (out["k8s.ns.name"], out["k8s.pod.name"]) == ("shop", "checkout-6b7c8-pqrst")
    assert out["container.image"] == "registry.example/shop/checkout:1.0" and payload["hostname"] == "node-1"
