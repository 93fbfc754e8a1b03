"""This node, ready to run one DaemonSet pod as the kubelet would (tests/kubelet_pod.py):
the image built by deploy/image/build.sh, the container runtimes' state in a test prefix
(tests/k8s_pods.py), the loopback API server over TLS with a service-account token, a
listener the workloads connect to, the test's own cgroup and pin path for enforcement.
For tests/bpf/test_daemonset.py and bench/bench_daemonset.py.

The only edits to what is rendered are the ones CI's rules need: the custom rules
ConfigMap gets one rule (a connect to the test's port), and the config ConfigMap moves
the node-wide enforcement attach point (the root cgroup, /sys/fs/bpf/netvigil) to a
cgroup and pin path of the test's own.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import yaml

from k8s_apiserver import FakeApiServer, self_signed_cert
from sensor import cgroups
from tests.agent_http import http_get
from tests.k8s_pods import PodHost
from tests.kubelet_pod import KubeletPod, Node, OciImage

REPO = Path(__file__).resolve().parent.parent
PID = os.getpid()
TOKEN = "netvigil-daemonset-token"
RULE = "DaemonSet test connect"
NETVIGIL = str(Path(sys.executable).with_name("netvigil"))


def alerts(stdout: str) -> list[dict[str, Any]]:
    """The alert objects the agent printed (--json: one per line)."""
    out = []
    for line in stdout.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("rule") == RULE:
            out.append(obj)
    return out


def bpf_mounts() -> set[str]:
    """Mount points under /sys/fs/bpf (a Bidirectional mount must leave none behind)."""
    points = (line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())
    return {p for p in points if p.startswith("/sys/fs/bpf")}


class DaemonSetNode:
    """This node for one DaemonSet pod: runtime roots in a prefix, the loopback API server,
    a listener the workloads connect to, the test's cgroup and pin path; `close()` undoes all."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.host = PodHost(tmp / "node")
        cert, key = self_signed_cert(tmp)
        self.api = FakeApiServer(token=TOKEN, tls=(cert, key))
        self.ca = cert.read_text()
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        self.cgroup = cgroups.mount() / f"netvigil-test-ds-{PID}"
        self.cgroup.mkdir(exist_ok=True)
        self.pin_path = Path(f"/sys/fs/bpf/netvigil-test-ds-{PID}")
        self.host_config = tmp / "host-config.yaml"
        self.node = Node(host_paths={p: str(tmp / "node" / p.lstrip("/"))
                                     for p in ("/run/containerd", "/run/containers", "/var/run/crio")},
                         api_host="127.0.0.1", api_port=self.api.port, token=TOKEN, ca_crt=self.ca)

    def _accept(self) -> None:
        while True:
            try:
                self.listener.accept()[0].close()
            except OSError:     # closed
                return

    def edit(self, objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rendered objects with the test's rule and its own enforcement attach point."""
        cms = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}
        config = yaml.safe_load(cms["netvigil-config"]["data"]["netvigil.yaml"])
        config["enforce"] = {"cgroup": f"/{self.cgroup.name}", "pin_path": str(self.pin_path), "persist": False}
        cms["netvigil-config"]["data"]["netvigil.yaml"] = yaml.safe_dump(config)
        self.host_config.write_text(json.dumps({"enforce": config["enforce"]}))
        rules = yaml.safe_load(cms["netvigil-rules"]["data"]["custom.yaml"]) or []
        rules.append({"rule": RULE, "desc": "a connect to the DaemonSet test's listener", "priority": "NOTICE",
                      "condition": f"evt.type = connect and fd.rport = {self.port}",
                      "output": "pid=%proc.pid name=%proc.name exe=%proc.exepath container=%container.id "
                                "pod=%k8s.ns.name/%k8s.pod.name app=%k8s.pod.label[app]"})
        cms["netvigil-rules"]["data"]["custom.yaml"] = yaml.safe_dump(rules)
        return objs

    def cleanup_enforcement(self) -> str:
        """`netvigil run --cleanup` on the host with the agent's enforcement settings: what it removed."""
        out = subprocess.run([NETVIGIL, "run", "--cleanup", "--config", str(self.host_config)],
                             capture_output=True, text=True, timeout=60)
        return out.stderr.strip()

    def close(self) -> None:
        self.host.close()
        if self.host_config.exists():
            self.cleanup_enforcement()
        shutil.rmtree(self.pin_path, ignore_errors=True)
        try:
            self.cgroup.rmdir()
        except OSError:
            pass
        self.api.close()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)    # wakes the accepting thread
        except OSError:
            pass
        self.listener.close()




class ImageBuildError(Exception):
    """deploy/image/build.sh failed (the message holds the end of its log)."""


def build_image(log: Path, cache_root: Path | None = None) -> Path:
    """Run deploy/image/build.sh (its cache, $NETVIGIL_IMAGE_CACHE or `cache_root`, makes a
    rebuild of unchanged inputs a no-op); the directory holding `oci/` and `netvigil.oci.tar`."""
    env = {**os.environ, **({"NETVIGIL_IMAGE_CACHE": str(cache_root)} if cache_root else {})}
    with log.open("w") as err:
        build = subprocess.run([str(REPO / "deploy/image/build.sh")], stdout=subprocess.PIPE, stderr=err, text=True,
                               env=env)
    if build.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise ImageBuildError(f"the image did not build: deploy/image/build.sh exited {build.returncode} "
                              f"(full log {log}); its last lines:\n{tail}")
    return Path(build.stdout.strip().splitlines()[-1])


def unpack_image(cache: Path, dest: Path) -> OciImage:
    """The built image (tag: the project's version), unpacked into `dest` (a new bundle dir)."""
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    return OciImage.unpack(cache / "oci", version, dest)


def wait_ready(kubelet: KubeletPod, port: int, path: str, budget_s: float) -> float:
    """Poll the probe path until 200 (AssertionError if the container exits or the budget
    runs out); seconds from container start to ready."""
    deadline = time.monotonic() + budget_s
    while http_get(port, path)[0] != 200:
        assert kubelet.running and kubelet.running.proc.poll() is None, f"the agent exited: {kubelet.stderr[-3000:]}"
        assert time.monotonic() < deadline, f"not ready within {budget_s:.0f} s: {kubelet.stderr[-3000:]}"
        time.sleep(0.1)
    return time.monotonic() - kubelet.started_at
