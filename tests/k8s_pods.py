"""Kubernetes pods on this machine without a kubelet: real runc containers laid out as
containerd's CRI and CRI-O lay them out.

- containerd: bundle `<prefix>/run/containerd/io.containerd.runtime.v2.task/k8s.io/<id>/`
  (config.json with the `io.kubernetes.cri.*` annotations, rootfs/), runc state under
  `<prefix>/run/containerd/runc/k8s.io`, container named by its full id;
- CRI-O: bundle `<prefix>/run/containers/storage/overlay-containers/<id>/userdata/`
  (`io.kubernetes.pod.*`, `io.kubernetes.container.name`, `io.kubernetes.cri-o.*`
  annotations), rootfs under `<prefix>/var/lib/containers/storage/overlay/<id>/merged`,
  runc state under `<prefix>/run/runc`;
- kubelet's cgroupfs layout `<cgroup root>/kubepods/<qos>/pod<uid>/<id>` (CRI-O:
  `crio-<id>`) under the cgroup2 mount (and every v1 hierarchy, as runc does on a
  hybrid host). `cgroup_root` is kubelet's --cgroup-root (default `/`).

`<prefix>` is a directory of the test (the runtime roots are configurable), so the
host's real /run/containerd is never touched. Every container runs busybox plus the
host's /usr, /lib and /lib64 mounted read-only (python3 works inside). `PodHost.close()`
removes every container, bundle, netns and cgroup it created, even after a failure.
`Pod.api_object()` is the Pod as the API server would serve it, for tests/k8s_apiserver.py.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensor import cgroups
from sensor.k8s.runtime import RuntimeRoots

CONTAINERD, CRIO = "containerd", "cri-o"
BUSYBOX_APPLETS = ("sh", "nc", "sleep", "cat", "echo", "ls", "true", "wget")


def _new_id() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


@dataclass
class Container:
    """One running (or finished) runc container of a pod."""

    id: str
    name: str
    image: str
    runtime: str
    runc_root: Path
    bundle: Path
    proc: subprocess.Popen[str]

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def wait(self, timeout: float = 30) -> tuple[int, str, str]:
        """Exit code, stdout and stderr of the container's process."""
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err


@dataclass
class Pod:
    """A pod: identity, cgroup directory, optional network namespace, its containers."""

    host: PodHost
    name: str
    namespace: str
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    qos: str = "besteffort"
    labels: dict[str, str] = field(default_factory=dict)
    owner: tuple[str, str] | None = None   # (kind, name) of the controller, e.g. ("ReplicaSet", "web-5d8f9c")
    ports: list[int] = field(default_factory=list)
    netns: str | None = None
    ip: str | None = None
    service_account: str = "default"
    sandbox_id: str = field(default_factory=_new_id)
    containers: list[Container] = field(default_factory=list)

    @property
    def cgroup(self) -> str:
        """The pod's cgroup path relative to the cgroup2 mount."""
        root = self.host.cgroup_root.rstrip("/")
        return f"{root}/kubepods/{self.qos}/pod{self.uid}"

    @property
    def cgroup_dir(self) -> Path:
        return self.host.mount / self.cgroup.lstrip("/")

    def make_cgroup(self) -> Path:
        """Create the pod's cgroup (as kubelet does before the sandbox starts)."""
        self.cgroup_dir.mkdir(parents=True, exist_ok=True)
        return self.cgroup_dir

    def start(self, args: list[str], *, name: str = "app", image: str = "docker.io/library/busybox:1.36",
              runtime: str = CONTAINERD) -> Container:
        """Run `args` in a new container of this pod (runc, foreground, pipes)."""
        return self.host.start_container(self, args, name=name, image=image, runtime=runtime)

    def api_object(self, node_name: str = "") -> dict[str, Any]:
        """The Pod as the API server serves it (JSON shape of core/v1 Pod)."""
        labels = dict(self.labels)
        owners = []
        if self.owner is not None:
            kind, owner_name = self.owner
            api = "apps/v1" if kind in ("ReplicaSet", "StatefulSet", "DaemonSet") else "batch/v1"
            owners.append({"apiVersion": api, "kind": kind, "name": owner_name, "uid": str(uuid.uuid4()),
                           "controller": True, "blockOwnerDeletion": True})
            if kind == "ReplicaSet" and "-" in owner_name:
                labels.setdefault("pod-template-hash", owner_name.rsplit("-", 1)[1])
        specs = [{"name": c.name, "image": c.image} for c in self.containers] or [
            {"name": "app", "image": "docker.io/library/busybox:1.36"}]
        if self.ports:
            specs[0]["ports"] = [{"containerPort": p, "protocol": "TCP"} for p in self.ports]
        prefix = {CONTAINERD: "containerd://", CRIO: "cri-o://"}
        statuses = [{"name": c.name, "image": c.image, "imageID": "", "ready": True, "restartCount": 0,
                     "containerID": prefix[c.runtime] + c.id, "state": {"running": {}}}
                    for c in self.containers]
        status: dict[str, Any] = {"phase": "Running", "containerStatuses": statuses, "qosClass": "BestEffort"}
        if self.ip:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid,
                         "resourceVersion": "1", "labels": labels, "ownerReferences": owners,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": node_name, "serviceAccountName": self.service_account,
                     "containers": specs},
            "status": status,
        }


class PodHost:
    """Creates pods and their containers under one test prefix; `close()` removes all."""

    def __init__(self, prefix: Path, *, cgroup_root: str = "/") -> None:
        busybox = shutil.which("busybox")
        if not busybox or not shutil.which("runc"):
            raise RuntimeError("runc and busybox-static are installed by the bootstrap")
        self.busybox = busybox
        self.prefix = prefix
        self.cgroup_root = cgroup_root
        self.mount = cgroups.mount()
        self.roots = RuntimeRoots(prefix=str(prefix))
        self.pods: list[Pod] = []
        self._netns: list[str] = []
        self._spec: dict[str, Any] | None = None

    # ------------------------------------------------------------------ pods
    def pod(self, name: str, namespace: str = "default", **kwargs: Any) -> Pod:
        """A new pod (its cgroup is created with its first container, or by make_cgroup)."""
        pod = Pod(self, name, namespace, **kwargs)
        self.pods.append(pod)
        return pod

    def netns(self, name: str, addresses: list[str]) -> str:
        """A network namespace with loopback up and `addresses` (CIDRs) on it; removed by close()."""
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        self._netns.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True)
        for cidr in addresses:
            subprocess.run(["ip", "-n", name, "addr", "add", cidr, "dev", "lo"], check=True, capture_output=True)
        return name

    # ------------------------------------------------------------------ containers
    def _base_spec(self) -> dict[str, Any]:
        if self._spec is None:
            scratch = self.prefix / ".spec"
            scratch.mkdir(parents=True, exist_ok=True)
            subprocess.run(["runc", "spec", "--bundle", str(scratch)], check=True)
            self._spec = json.loads((scratch / "config.json").read_text())
            shutil.rmtree(scratch)
        return copy.deepcopy(self._spec)

    def _rootfs(self, path: Path) -> None:
        (path / "bin").mkdir(parents=True)
        shutil.copy(self.busybox, path / "bin" / "busybox")
        for applet in BUSYBOX_APPLETS:
            (path / "bin" / applet).symlink_to("busybox")
        for d in ("usr", "lib", "lib64", "proc", "dev", "sys", "tmp", "etc"):
            host = Path("/" + d)
            if host.is_symlink():   # merged /usr: /lib -> usr/lib
                (path / d).symlink_to(os.readlink(host))
            else:
                (path / d).mkdir(exist_ok=True)

    def start_container(self, pod: Pod, args: list[str], *, name: str, image: str,
                        runtime: str) -> Container:
        """Lay out the bundle as `runtime` does and `runc run` busybox `args` in the pod's cgroup."""
        spec = self._base_spec()
        spec["process"]["terminal"] = False
        spec["process"]["args"] = args
        spec["process"]["env"] = ["PATH=/bin:/usr/bin", "HOME=/tmp"]
        spec["root"]["readonly"] = True
        for d in ("usr", "lib", "lib64"):
            if Path("/" + d).is_dir() and not Path("/" + d).is_symlink():
                spec["mounts"].append({"destination": "/" + d, "type": "bind", "source": "/" + d,
                                       "options": ["rbind", "ro"]})
        spec["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                               "options": ["nosuid", "nodev", "mode=1777"]})
        namespaces = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
        if pod.netns:
            namespaces.append({"type": "network", "path": f"/var/run/netns/{pod.netns}"})
        spec["linux"]["namespaces"] = namespaces
        return self.run_spec(pod, spec, name=name, image=image, runtime=runtime)

    def run_spec(self, pod: Pod, spec: dict[str, Any], *, name: str, image: str, runtime: str = CONTAINERD,
                 stdout: Any = subprocess.PIPE, stderr: Any = subprocess.PIPE) -> Container:
        """`runc run` an OCI spec as `runtime` runs a container of `pod`: its bundle and
        annotations where the runtime keeps them, its cgroup under the pod's. A spec whose
        root.path is absolute keeps that root filesystem; otherwise busybox is laid out."""
        cid = _new_id()
        spec = copy.deepcopy(spec)
        own_root = Path(spec["root"]["path"]) if Path(spec["root"]["path"]).is_absolute() else None
        if runtime == CONTAINERD:
            bundle = Path(self.roots.containerd_tasks()) / "k8s.io" / cid
            rootfs = bundle / "rootfs"
            runc_root = self.prefix / "run/containerd/runc/k8s.io"
            leaf = cid
            annotations = {
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.container-name": name,
                "io.kubernetes.cri.image-name": image,
                "io.kubernetes.cri.sandbox-id": pod.sandbox_id,
                "io.kubernetes.cri.sandbox-name": pod.name,
                "io.kubernetes.cri.sandbox-namespace": pod.namespace,
                "io.kubernetes.cri.sandbox-uid": pod.uid,
            }
            spec["root"]["path"] = str(own_root) if own_root else "rootfs"
            config = bundle / "config.json"
            self._sandbox_containerd(pod)
        elif runtime == CRIO:
            bundle = Path(self.roots.crio_containers()) / cid / "userdata"
            rootfs = self.prefix / "var/lib/containers/storage/overlay" / cid / "merged"
            runc_root = self.prefix / "run/runc"
            leaf = f"crio-{cid}"
            annotations = {
                "io.kubernetes.cri-o.ContainerType": "container",
                "io.kubernetes.cri-o.ContainerID": cid,
                "io.kubernetes.cri-o.ImageName": image,
                "io.kubernetes.cri-o.SandboxID": pod.sandbox_id,
                "io.kubernetes.cri-o.Labels": json.dumps({
                    "io.kubernetes.container.name": name, "io.kubernetes.pod.name": pod.name,
                    "io.kubernetes.pod.namespace": pod.namespace, "io.kubernetes.pod.uid": pod.uid}),
                "io.kubernetes.container.name": name,
                "io.kubernetes.pod.name": pod.name,
                "io.kubernetes.pod.namespace": pod.namespace,
                "io.kubernetes.pod.uid": pod.uid,
            }
            spec["root"]["path"] = str(own_root or rootfs)
            config = bundle / "config.json"
            self._sandbox_crio(pod)
        else:
            raise ValueError(f"unknown runtime {runtime!r}")
        spec["annotations"] = {**spec.get("annotations", {}), **annotations}
        bundle.mkdir(parents=True)
        if own_root is None:
            self._rootfs(rootfs)
        spec["linux"]["cgroupsPath"] = f"{pod.cgroup}/{leaf}"
        config.write_text(json.dumps(spec))
        runc_root.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(["runc", "--root", str(runc_root), "run", "--bundle", str(bundle), cid],
                                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, text=True)
        container = Container(cid, name, image, runtime, runc_root, bundle, proc)
        pod.containers.append(container)
        return container

    def _sandbox_containerd(self, pod: Pod) -> None:
        """The pod's sandbox bundle (containerd writes it before the app containers)."""
        bundle = Path(self.roots.containerd_tasks()) / "k8s.io" / pod.sandbox_id
        if bundle.exists():
            return
        bundle.mkdir(parents=True)
        (bundle / "config.json").write_text(json.dumps({"ociVersion": "1.1.0", "annotations": {
            "io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": pod.sandbox_id,
            "io.kubernetes.cri.sandbox-name": pod.name, "io.kubernetes.cri.sandbox-namespace": pod.namespace,
            "io.kubernetes.cri.sandbox-uid": pod.uid}}))

    def _sandbox_crio(self, pod: Pod) -> None:
        """CRI-O's sandbox bundle: its Labels annotation holds the pod's labels."""
        userdata = Path(self.roots.crio_containers()) / pod.sandbox_id / "userdata"
        if userdata.exists():
            return
        userdata.mkdir(parents=True)
        labels = {**pod.labels, "io.kubernetes.pod.name": pod.name,
                  "io.kubernetes.pod.namespace": pod.namespace, "io.kubernetes.pod.uid": pod.uid}
        (userdata / "config.json").write_text(json.dumps({"ociVersion": "1.1.0", "annotations": {
            "io.kubernetes.cri-o.ContainerType": "sandbox", "io.kubernetes.cri-o.Labels": json.dumps(labels),
            "io.kubernetes.pod.name": pod.name, "io.kubernetes.pod.namespace": pod.namespace,
            "io.kubernetes.pod.uid": pod.uid}}))

    # ------------------------------------------------------------------ cleanup
    def remove_pod(self, pod: Pod) -> None:
        """Stop and delete a pod's containers, bundles and cgroups (as kubelet would)."""
        for c in pod.containers:
            subprocess.run(["runc", "--root", str(c.runc_root), "delete", "--force", c.id], capture_output=True)
            if c.proc.poll() is None:
                c.proc.kill()
            try:
                c.proc.communicate(timeout=10)
            except (subprocess.TimeoutExpired, ValueError):
                pass
        for hierarchy in self._hierarchies():
            _rmdir_tree(hierarchy / pod.cgroup.lstrip("/"))

    def _hierarchies(self) -> list[Path]:
        found = [self.mount]
        base = Path("/sys/fs/cgroup")
        if self.mount != base and base.is_dir():
            found += [p for p in base.iterdir() if p.is_dir() and p != self.mount and not p.is_symlink()]
        return found

    def close(self) -> None:
        """Remove everything created: containers, cgroups (pods, qos and kubepods dirs if
        now empty), netns, the prefix."""
        for pod in self.pods:
            self.remove_pod(pod)
        root = self.cgroup_root.rstrip("/")
        for hierarchy in self._hierarchies():
            rels = {f"{root}/kubepods/{p.qos}" for p in self.pods} | {f"{root}/kubepods"}
            if root and hierarchy != self.mount:
                rels.add(root)   # runc made the --cgroup-root in every v1 hierarchy
            for rel in sorted(rels, key=len, reverse=True):
                try:
                    (hierarchy / rel.lstrip("/")).rmdir()
                except OSError:
                    pass
        for ns in self._netns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(self.prefix, ignore_errors=True)


def _rmdir_tree(path: Path) -> None:
    if not path.is_dir():
        return
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        _rmdir(child)
    _rmdir(path)


def _rmdir(path: Path) -> None:
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            try:
                for pid in (path / "cgroup.procs").read_text().split():
                    try:
                        os.kill(int(pid), 9)
                    except ProcessLookupError:
                        pass
            except OSError:
                pass
            time.sleep(0.1)
