"""The enricher with the real `kubernetes` client against the loopback API server: a pod
deleted before its last event still names itself on that event (with labels and owner)."""
from __future__ import annotations

from k8s_apiserver import FakeApiServer, make_pod
from k8s_support import eventually, watcher_for

from sensor.k8s.enrich import K8sEnricher
from sensor.pipeline import Pipeline
from sensor.process_table import ProcessRecord, ProcessTable

UID = "0c7c5b1e-5d2a-4d7e-9a61-3f0e4c2b9a10"


def test_late_events_of_a_pod_deleted_before_them_carry_its_metadata(tmp_path) -> None:
    with FakeApiServer() as api:
        pod = make_pod("web-5d8f9c-aaaaa", "shop", labels={"app": "web", "pod-template-hash": "5d8f9c"},
                       owner=("ReplicaSet", "web-5d8f9c"))
        pod["metadata"]["uid"] = UID
        api.create("pods", pod)
        watcher = watcher_for(api, tmp_path)
        try:
            eventually(lambda: watcher.pods.by_uid(UID), what="the pod in the cache")
            enricher = K8sEnricher(None, watcher.pods, None, api_expected=watcher.api_expected)
            table = ProcessTable(None)
            enricher.records = lambda: iter(table)
            events: list[dict] = []
            pipeline = Pipeline(hostname="node-1", on_event=events.append, k8s=enricher)
            first = ProcessRecord("b:10:1", 10, 1, None, "app", "/app", "/app", [], 0, 0, 1, "3ad7b26ded6d", 1,
                                  meta={"k8s.pod.uid": UID})
            enricher.annotate(first)
            table.add(first)

            api.delete("pods", "shop", "web-5d8f9c-aaaaa")
            eventually(lambda: getattr(watcher.pods.by_uid(UID), "deleted", False), what="the deletion")
            pipeline.tick()
            late = ProcessRecord("b:11:2", 11, 10, "b:10:1", "sh", "/bin/sh", "/bin/sh", [], 0, 0, 1,
                                 "3ad7b26ded6d", 2, meta={"k8s.pod.uid": UID})   # a last exec in the pod
            enricher.annotate(late)
            table.add(late)
            for record in (first, late):
                pipeline({**table.fields(record.exec_id), "evt.type": "connect", "fd.rip": "203.0.113.9"})
        finally:
            watcher.stop()
    assert len(events) == 2   # not held: the pod is known, though deleted
    for ev in events:
        assert (ev["k8s.pod.name"], ev["k8s.ns.name"], ev["k8s.deployment.name"]) == ("web-5d8f9c-aaaaa", "shop", "web")
        assert ev["k8s.pod.labels"]["app"] == "web"
