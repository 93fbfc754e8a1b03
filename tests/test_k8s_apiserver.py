"""The loopback API server is faithful: kubectl (the judge) reads it as a real cluster,
and the objects it serves validate against the Kubernetes 1.32 schemas."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import kubernetes_validate
import pytest
from k8s_apiserver import FakeApiServer, make_endpointslice, make_namespace, make_pod, make_service

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl not on this image")


@pytest.fixture(scope="module")
def api():
    with FakeApiServer(bookmark_interval_s=0.5) as server:
        server.create("namespaces", make_namespace("shop", {"team": "payments"}))
        server.create("pods", make_pod("web-7d4b9c8f6-abcde", "shop", labels={"app": "web"},
                                       owner=("ReplicaSet", "web-7d4b9c8f6")))
        server.create("pods", make_pod("db-0", "shop", node="node-2", ip="10.244.2.3",
                                       owner=("StatefulSet", "db")))
        server.create("services", make_service("web", "shop", cluster_ips=["10.96.0.10", "fd00::10"]))
        server.create("endpointslices", make_endpointslice("web-x1", "shop", "web",
                                                           [("10.244.1.10", "web-7d4b9c8f6-abcde")]))
        yield server


def kubectl(api: FakeApiServer, tmp_path: Path, *args: str) -> str:
    kc = api.kubeconfig(tmp_path / "kubeconfig")
    p = subprocess.run([KUBECTL, "--kubeconfig", str(kc), *args], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_kubectl_gets_pods_as_json_with_the_servers_resource_versions(api, tmp_path) -> None:
    out = json.loads(kubectl(api, tmp_path, "get", "pods", "-A", "-o", "json"))
    names = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in out["items"]}
    assert names == {("shop", "web-7d4b9c8f6-abcde"), ("shop", "db-0")}
    served = api.get("pods", "shop", "db-0")
    db = next(p for p in out["items"] if p["metadata"]["name"] == "db-0")
    assert db["metadata"]["resourceVersion"] == served["metadata"]["resourceVersion"]
    assert db["metadata"]["ownerReferences"][0]["kind"] == "StatefulSet"


def test_kubectl_tables_for_services_endpointslices_and_namespace_labels(api, tmp_path) -> None:
    svc = kubectl(api, tmp_path, "get", "svc", "-n", "shop")
    assert svc.split("\n")[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert "10.96.0.10" in svc and "80/TCP" in svc
    eps = kubectl(api, tmp_path, "get", "endpointslices", "-n", "shop")
    assert "web-x1" in eps and "10.244.1.10" in eps
    ns = kubectl(api, tmp_path, "get", "ns", "--show-labels")
    assert "team=payments" in ns


def test_kubectl_field_and_label_selectors(api, tmp_path) -> None:
    out = kubectl(api, tmp_path, "get", "pods", "-A", "--field-selector", "spec.nodeName=node-2", "-o", "name")
    assert out.split() == ["pod/db-0"]
    out = kubectl(api, tmp_path, "get", "pods", "-n", "shop", "-l", "app=web", "-o", "name")
    assert out.split() == ["pod/web-7d4b9c8f6-abcde"]
    out = kubectl(api, tmp_path, "get", "pods", "-n", "shop", "-l", "app notin (web)", "-o", "name")
    assert out.split() == ["pod/db-0"]


def test_kubectl_paginates_with_limit_and_continue(api, tmp_path) -> None:
    out = kubectl(api, tmp_path, "get", "pods", "-A", "--chunk-size=1", "-o", "name")
    assert sorted(out.split()) == ["pod/db-0", "pod/web-7d4b9c8f6-abcde"]
    pages = [r for r in api.requests_for("pods") if r.query.get("limit") == "1"]
    assert any("continue" in r.query for r in pages)


def test_kubectl_watch_sees_an_add_made_while_it_watches(api, tmp_path) -> None:
    kc = api.kubeconfig(tmp_path / "kubeconfig")
    proc = subprocess.Popen([KUBECTL, "--kubeconfig", str(kc), "get", "pods", "-n", "shop", "--watch"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not api.requests_for("pods", watch=True) and time.monotonic() < deadline:
            time.sleep(0.05)
        api.create("pods", make_pod("late-1", "shop", ip="10.244.1.77"))
        time.sleep(1.0)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert "late-1" in out, (out, err)
    watch = api.requests_for("pods", watch=True)[-1]
    assert watch.query.get("resourceVersion")  # kubectl watches from its list's resourceVersion
    api.delete("pods", "shop", "late-1")


def test_kubectl_reports_rbac_denial_as_the_real_server_words_it(api, tmp_path) -> None:
    api.forbid("services")
    try:
        kc = api.kubeconfig(tmp_path / "kubeconfig")
        p = subprocess.run([KUBECTL, "--kubeconfig", str(kc), "get", "svc", "-A"], capture_output=True,
                           text=True, timeout=30)
    finally:
        api.forbid("services", False)
    assert p.returncode != 0
    assert 'services is forbidden: User "system:serviceaccount:netvigil:netvigil" cannot list' in p.stderr


def test_served_objects_validate_against_the_1_32_schemas(api) -> None:
    for resource, ns, name in (("pods", "shop", "db-0"), ("services", "shop", "web"),
                               ("endpointslices", "shop", "web-x1"), ("namespaces", "", "shop")):
        obj = api.get(resource, ns, name)
        kubernetes_validate.validate(obj, "1.32", strict=True)
