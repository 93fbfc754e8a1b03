"""The DaemonSet, run on this node as the kubelet would run it.

The manifests are rendered (`kubectl kustomize`), and the DaemonSet's container, from the
built image, runs with runc exactly as its spec says (tests/kubelet_pod.py translates it:
command, env with NODE_NAME from the downward API, security context, every hostPath
mount with its propagation, hostPID and hostNetwork, the ConfigMaps laid out as the
kubelet lays them out, the service-account token of the loopback API server). Inside,
the agent must become ready, report a connect by a host process and one by a CRI pod
with the right attribution, serve /metrics that prometheus_client parses and that count
those events, and stop on SIGTERM within the grace period, leaving nothing attached.

The test edits only what CI's rules need (tests/daemonset_node.py: one rule, and a test
cgroup and pin path instead of the node's root cgroup).
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/: support modules

from daemonset_node import RULE, DaemonSetNode, alerts, bpf_mounts, wait_ready  # noqa: E402
from deploy_manifests import REPO, agent_container, by_kind, render  # noqa: E402
from tests.agent_http import http_get, samples  # noqa: E402
from tests.kubelet_pod import KubeletPod, OciImage  # noqa: E402

CONNECT = "import os, socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1]))).close(); print(os.getpid())"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[DaemonSetNode]:
    n = DaemonSetNode(tmp_path)
    try:
        yield n
    finally:
        n.close()


@pytest.mark.parametrize("kustomization", ["deploy/base", "deploy/overlays/least-privilege"])
def test_daemonset_pod_runs_as_the_kubelet_would(kustomization: str, node: DaemonSetNode, netvigil_image: OciImage,
                                                 tmp_path: Path) -> None:
    objs = node.edit(render(kustomization))
    pod_spec = by_kind(objs, "DaemonSet")["spec"]["template"]["spec"]
    container = agent_container(objs)
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "http")
    startup = container["startupProbe"]
    with socket.socket() as probe:    # hostNetwork: the agent's port is this node's port
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            pytest.fail(f"port {port} (the DaemonSet's http port) is taken on this node: {exc}", pytrace=False)
    mounts_before = bpf_mounts()
    web = node.host.pod("web", "shop", labels={"app": "web"})
    kubelet = KubeletPod(objs, netvigil_image, node.host, tmp_path / "pod", node.node)
    # a host process older than the agent (known from /proc: needs SYS_PTRACE unprivileged)
    older = subprocess.Popen(["/usr/bin/python3", "-c", f"import sys; sys.stdin.readline(); {CONNECT}",
                              str(node.port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        kubelet.start()
        # within the startup probe's budget: the agent compiles its programs first
        wait_ready(kubelet, port, startup["httpGet"]["path"],
                             startup["periodSeconds"] * startup["failureThreshold"])
        assert http_get(port, "/healthz")[0] == 200
        # sensor.hooks auto: the cgroup set where it loads (privileged), else the syscalls set
        hooks = "cgroup" if kustomization == "deploy/base" else "syscalls"
        assert f"network hooks {hooks}" in kubelet.stderr, kubelet.stderr[-3000:]
        # NODE_NAME came from the downward API: the pod watch selects this node's pods
        pod_watches = node.api.requests_for("pods")
        assert pod_watches and {r.query.get("fieldSelector") for r in pod_watches} == {
            f"spec.nodeName={node.node.name}"}

        # host processes (older and newer than the agent), and a CRI pod's container
        # (containerd's layout, its API object with labels)
        older_pid = int(older.communicate("go\n", timeout=30)[0])
        host_pids = {older_pid, int(subprocess.run(["/usr/bin/python3", "-c", CONNECT, str(node.port)],
                                                        check=True, capture_output=True, text=True,
                                                        timeout=30).stdout)}
        app = web.start(["python3", "-c", f"import time; time.sleep(2); {CONNECT}", str(node.port)])
        node.api.create("pods", web.api_object(node.node.name))
        rc, out, err = app.wait(timeout=30)
        assert rc == 0, err

        deadline = time.monotonic() + 20
        while len(found := alerts(kubelet.stdout)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        fields = [a["output_fields"] for a in found]
        assert sorted(f["container.id"] for f in fields) == sorted(["host", "host", app.short_id]), found
        on_host = {f["proc.pid"]: f for f in fields if f["container.id"] == "host"}
        assert set(on_host) == host_pids
        assert {f["proc.name"] for f in on_host.values()} == {"python3"}
        assert on_host[older_pid]["proc.exepath"] == os.path.realpath("/usr/bin/python3")   # /proc/PID/exe
        pod_fields = next(f for f in fields if f["container.id"] == app.short_id)
        assert pod_fields["proc.name"] == "python3"
        assert (pod_fields["k8s.ns.name"], pod_fields["k8s.pod.name"]) == ("shop", "web")
        assert pod_fields["k8s.pod.label[app]"] == "web"     # from the API, through the in-cluster token

        code, text = http_get(port, "/metrics")
        assert code == 200
        m = samples(text)
        assert m[("netvigil_events_total", (("type", "connect"),))] >= 3
        assert m[("netvigil_rule_matches_total", (("priority", "Notice"), ("rule", RULE)))] == 3
        assert m[("netvigil_k8s_synced", ())] == 1
        assert m[("netvigil_ready", ())] == 1
        documented = set(re.findall(r"`(netvigil_[a-z0-9_]+)`", (REPO / "docs/operations.md").read_text()))
        assert {name for name, _ in m if name.startswith("netvigil_")} - documented == set()

        code, seconds = kubelet.stop()
        assert code == 0, kubelet.stderr[-3000:]
        assert seconds < pod_spec["terminationGracePeriodSeconds"]
        # the agent detached and unpinned what it attached (persist: false): nothing left to clean
        assert node.cleanup_enforcement() == "netvigil: removed 0 pinned or attached enforcement object(s)"
    finally:
        if older.poll() is None:
            older.kill()
            older.wait()
        kubelet.close()
    assert bpf_mounts() == mounts_before


def test_doctor_in_the_image_reports_the_headers_the_agent_compiles_with(node: DaemonSetNode, netvigil_image: OciImage,
                                                                         tmp_path: Path) -> None:
    """On a node whose /lib/modules and /usr/src are not mounted, `netvigil doctor` in the
    DaemonSet's container names the image's generic headers, and its trial load (the
    agent's own compile path) succeeds with them."""
    objs = node.edit(render("deploy/base"))
    container = agent_container(objs)
    container["args"] = ["doctor", "--json"]
    container["volumeMounts"] = [m for m in container["volumeMounts"]
                                 if m["mountPath"] not in ("/lib/modules", "/usr/src")]
    kubelet = KubeletPod(objs, netvigil_image, node.host, tmp_path / "pod", node.node)
    try:
        kubelet.start()
        assert kubelet.running is not None
        code = kubelet.running.proc.wait(timeout=180)
        report = {c["name"]: c for c in json.loads(kubelet.stdout)}
        assert code == 0, (report, kubelet.stderr[-2000:])
        headers = report["kernel headers"]
        assert headers["status"] == "ok" and headers["detail"].startswith("generic:"), headers
        assert "/opt/netvigil/kernel" in headers["detail"]
        assert report["BPF load"]["status"] == "ok", report["BPF load"]
    finally:
        kubelet.close()
