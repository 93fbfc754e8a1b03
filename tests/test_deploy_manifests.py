"""deploy/: the kustomize base and overlays render, validate against Kubernetes' schemas
(strict, several minor versions) and hold what the agent needs: security context, mounts,
probes, RBAC verbs (exactly get/list/watch on what the agent reads)."""
from __future__ import annotations

from typing import Any

import pytest
import yaml

import kubernetes_validate

from deploy_manifests import REPO, agent_container, by_kind, render

KUSTOMIZATIONS = ["deploy/base", "deploy/overlays/recording-hostpath", "deploy/overlays/falcosidekick",
                  "deploy/overlays/least-privilege"]
K8S_VERSIONS = ["1.30.0", "1.32.0", "1.34.0", "1.36.0"]


def mounts(objs: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """mountPath -> (volumeMount, volume)."""
    pod = by_kind(objs, "DaemonSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    return {m["mountPath"]: (m, volumes[m["name"]]) for m in agent_container(objs)["volumeMounts"]}


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_rendered_manifests_validate_strictly(path: str, version: str) -> None:
    for obj in render(path):
        kubernetes_validate.validate(obj, version, strict=True)


def test_strict_validation_rejects_an_unknown_field() -> None:
    ds = by_kind(render("deploy/base"), "DaemonSet")
    ds["spec"]["template"]["spec"]["containers"][0]["privilegd"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSIONS[0], strict=True)


def test_rbac_is_exactly_read_only_on_what_the_agent_watches() -> None:
    objs = render("deploy/base")
    role = by_kind(objs, "ClusterRole")
    granted = {(group, res, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for res in rule["resources"] for verb in rule["verbs"]}
    wanted = {(group, res, verb)
              for group, res in [("", "pods"), ("", "services"), ("", "namespaces"),
                                 ("discovery.k8s.io", "endpointslices")]
              for verb in ("get", "list", "watch")}
    assert granted == wanted
    assert not any("resourceNames" in r or "nonResourceURLs" in r for r in role["rules"])
    binding = by_kind(objs, "ClusterRoleBinding")
    sa = by_kind(objs, "ServiceAccount")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": "netvigil"}]
    pod = by_kind(objs, "DaemonSet")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]


def test_daemonset_runs_on_every_node_as_node_critical_with_host_namespaces() -> None:
    ds = by_kind(render("deploy/base"), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True and pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["priorityClassName"] == "system-node-critical"
    assert ds["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    assert ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] >= 1
    c = agent_container(render("deploy/base"))
    assert c["securityContext"]["privileged"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    res = c["resources"]
    assert res["requests"]["memory"] == "256Mi" and res["limits"]["memory"] == "512Mi"


def test_host_mounts() -> None:
    m = mounts(render("deploy/base"))
    host = {path: (mount, vol["hostPath"]["path"]) for path, (mount, vol) in m.items() if "hostPath" in vol}
    assert host["/sys/fs/bpf"][0]["mountPropagation"] == "Bidirectional"
    assert host["/sys/fs/bpf"][1] == "/sys/fs/bpf"
    assert host["/sys/kernel/tracing"][1] == "/sys/kernel/tracing"
    assert host["/sys/kernel/debug"][1] == "/sys/kernel/debug"
    read_only = {"/sys/fs/cgroup": "/sys/fs/cgroup", "/lib/modules": "/lib/modules",
                 "/usr/src": "/usr/src", "/host/proc": "/proc", "/run/containerd": "/run/containerd",
                 "/run/containers": "/run/containers", "/var/run/crio": "/var/run/crio"}
    for path, source in read_only.items():
        mount, hostpath = host[path]
        assert hostpath == source and mount.get("readOnly") is True, path
    assert set(host) == {"/sys/fs/bpf", "/sys/kernel/tracing", "/sys/kernel/debug", *read_only}
    assert "emptyDir" in m["/var/lib/netvigil"][1]
    assert m["/etc/netvigil/config"][1]["configMap"]["name"] == "netvigil-config"
    assert m["/etc/netvigil/rules"][1]["configMap"]["name"] == "netvigil-rules"


def test_probes_cover_compile_time_on_the_agent_port() -> None:
    c = agent_container(render("deploy/base"))
    assert [p["name"] for p in c["ports"]] == ["http"]
    start, live, ready = c["startupProbe"], c["livenessProbe"], c["readinessProbe"]
    assert start["httpGet"] == {"path": "/readyz", "port": "http"}
    assert live["httpGet"] == {"path": "/healthz", "port": "http"}
    assert ready["httpGet"] == {"path": "/readyz", "port": "http"}
    assert start["periodSeconds"] * start["failureThreshold"] >= 120  # BCC compile on a busy node


def test_config_and_rules_configmaps_are_what_the_agent_loads() -> None:
    objs = render("deploy/base")
    cms = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}
    assert set(cms) == {"netvigil-config", "netvigil-rules"}   # no hash suffix: in-place updates
    config = yaml.safe_load(cms["netvigil-config"]["data"]["netvigil.yaml"])
    assert "/etc/netvigil/rules" in config["rules"]["paths"]
    c = agent_container(objs)
    assert c["args"][:3] == ["run", "--config", "/etc/netvigil/config/netvigil.yaml"]
    from sensor.config import load_config  # noqa: PLC0415

    path = REPO / "deploy/base/config/netvigil.yaml"
    loaded = load_config(path)
    assert loaded.record_dir == "/var/lib/netvigil/recordings"
    # the kubelet probes the node's address (hostNetwork) on the container's http port
    http_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "http")
    assert loaded.http.enabled and loaded.http.port == http_port
    assert loaded.http.address not in ("127.0.0.1", "::1", "localhost")
    from rules.loader import load_rules  # noqa: PLC0415

    assert load_rules([str(REPO / "deploy/base/rules")]).rules == []


def test_recording_overlay_puts_the_data_dir_on_the_node() -> None:
    m = mounts(render("deploy/overlays/recording-hostpath"))
    assert m["/var/lib/netvigil"][1]["hostPath"] == {"path": "/var/lib/netvigil", "type": "DirectoryOrCreate"}


def test_falcosidekick_overlay_adds_the_sink() -> None:
    args = agent_container(render("deploy/overlays/falcosidekick"))["args"]
    from alerts.config import apply_overrides, parse_alerts_config  # noqa: PLC0415

    sets = [a.split("=", 1)[1] for a in args if a.startswith("--alert-set=")]
    cfg = yaml.safe_load((REPO / "deploy/base/config/netvigil.yaml").read_text())
    parsed = parse_alerts_config(apply_overrides(cfg["alerts"], sets), "overlay")
    assert {s.name: s.type for s in parsed.sinks}.get("falcosidekick") == "falcosidekick"


def test_least_privilege_overlay_drops_privileged_for_the_capabilities_the_agent_uses() -> None:
    objs = render("deploy/overlays/least-privilege")
    sec = agent_container(objs)["securityContext"]
    assert sec["privileged"] is False and sec["readOnlyRootFilesystem"] is True and sec["runAsUser"] == 0
    # the set tests/bpf/test_daemonset.py runs with (each one needed there: see docs/operations.md)
    assert sec["capabilities"] == {"drop": ["ALL"], "add": ["BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE"]}
    assert sec["seccompProfile"] == {"type": "Unconfined"}
    # the API server allows Bidirectional propagation only to privileged containers
    m = mounts(objs)
    assert not any(mount.get("mountPropagation") == "Bidirectional" for mount, _ in m.values())
    assert m["/sys/fs/bpf"][0]["mountPropagation"] == "HostToContainer"
    # everything else is the base's
    base = mounts(render("deploy/base"))
    assert set(m) == set(base)
    assert {k: v for k, v in m.items() if k != "/sys/fs/bpf"} == {k: v for k, v in base.items() if k != "/sys/fs/bpf"}
