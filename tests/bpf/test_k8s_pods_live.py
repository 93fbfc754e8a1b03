"""Live: pods as containerd's CRI and CRI-O lay them out; events know their pod from the
first event of the first process, from the runtime's bundle alone (no API server)."""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sensor.k8s.enrich import K8sEnricher
from sensor.k8s.runtime import RuntimeMetadata
from tests.k8s_pods import CONTAINERD, CRIO, PodHost


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[PodHost]:
    host = PodHost(tmp_path / "node")
    try:
        yield host
    finally:
        host.close()


@pytest.fixture
def enriched(live, pods: PodHost):
    """The shared sensor joined with runtime metadata read under the pods' prefix."""
    enricher = K8sEnricher(RuntimeMetadata(pods.roots))
    live.sensor.attach_enricher(enricher)
    try:
        yield live, enricher
    finally:
        live.sensor.attach_enricher(None)


@pytest.mark.parametrize("runtime", [CONTAINERD, CRIO])
def test_first_event_of_a_pod_carries_pod_namespace_container_and_image(enriched, pods, runtime) -> None:
    live, _enricher = enriched
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    threading.Thread(target=lambda: srv.accept()[0].close(), daemon=True).start()
    pod = pods.pod("shop-web-5d8f9c-x7k2p", "shop")
    image = "registry.example:5000/shop/web:2.1"
    container = pod.start(["/bin/sh", "-c", f"nc -w 2 127.0.0.1 {port} </dev/null; sleep 0.2"],
                          name="web", image=image, runtime=runtime)
    try:
        connect = live.wait_for(lambda e: e.get("evt.type") == "connect" and e.get("fd.sport") == port,
                                timeout=15)
    finally:
        code, _out, err = container.wait()
        srv.close()
    assert code == 0, err
    mine = sorted((e for e in live.events if e.get("container.id") == container.short_id),
                  key=lambda e: e["evt.num"])
    first = mine[0]   # runc's own init re-exec, or the container's /bin/sh
    shell = next(e for e in mine if e["evt.type"] == "execve" and e["proc.exepath"] == "/bin/sh")
    for ev in (first, shell, connect):
        assert ev["k8s.pod.name"] == "shop-web-5d8f9c-x7k2p"
        assert ev["k8s.ns.name"] == "shop"
        assert ev["k8s.pod.uid"] == pod.uid
        assert ev["container.name"] == "web"
        assert ev["container.image"] == image
        assert ev["container.image.repository"] == "registry.example:5000/shop/web"
        assert ev["container.image.tag"] == "2.1"
    assert all(e.get("k8s.ns.name") == "shop" for e in mine)


def test_host_processes_get_no_pod_fields(enriched) -> None:
    import subprocess

    live, _ = enriched
    proc = subprocess.Popen(["true"])
    proc.wait()
    ev = live.wait_for(live.of_pid(proc.pid, "execve"))
    assert ev["container.id"] == "host" and "k8s.pod.name" not in ev and "container.name" not in ev
