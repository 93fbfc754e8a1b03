"""The kubelet's part for one pod of a rendered workload, without a kubelet.

A pod template, as `kubectl kustomize` renders it, becomes the OCI runtime spec the
kubelet and containerd's CRI plugin would make of it, written programmatically (never a
hand-written config.json), and runs with runc as a containerd CRI container of a
`tests.k8s_pods.PodHost` pod (bundle with the CRI annotations, kubepods cgroup).

What is translated, following containerd's CRI plugin (pkg/cri/opts, oci/spec.go):

- image: an OCI layout (deploy/image/build.sh) unpacked with umoci; `command` replaces
  the image's entrypoint and `args` its cmd (Kubernetes' rules), `$(VAR)` expanded;
  the image's env, then HOSTNAME, the `kubernetes` Service's env, the container's env
  (`value`, `valueFrom.fieldRef` resolved as the downward API does); working directory;
- securityContext: `privileged` (every capability this process holds, as containerd's
  WithAllCurrentCapabilities, no masked or read-only /proc paths, /sys and cgroupfs
  read-write, all devices allowed) or containerd's default capability set with
  `capabilities.add`/`drop` (`ALL` understood); runAsUser/Group; readOnlyRootFilesystem;
  allowPrivilegeEscalation false: no_new_privs; seccompProfile Unconfined (or unset,
  the kubelet's default); RuntimeDefault and Localhost are refused (not modelled);
- hostPID / hostNetwork / hostIPC: that namespace is not created (UTS follows the
  network); a private cgroup namespace for unprivileged containers on a cgroup2-only
  host, none on a hybrid host or when privileged (containerd's rule);
- volumes: hostPath (bind; readOnly; mountPropagation None/HostToContainer/Bidirectional
  as rprivate/rslave/rshared, with containerd's demand that the host mount be shared
  (or slave) and the API's that Bidirectional be privileged; the `type` checks; a
  missing untyped path is created as containerd does), configMap (the kubelet's atomic
  writer layout: `..data` -> `..<timestamp>`, each key a link through it, read-only),
  emptyDir (a directory; `medium: Memory` a tmpfs of `sizeLimit`), and the
  service-account token the kubelet projects at /var/run/secrets/kubernetes.io/serviceaccount
  when an API server is given (token, ca.crt, namespace);
- resources: memory limit, CPU shares from the request, CPU quota from the limit; the
  QoS class names the pod's cgroup (kubepods/<qos>/pod<uid>/<id>); oom_score_adj -997
  for a node- or cluster-critical priority class (the kubelet's critical pods) when this
  process may lower it;
- the files the kubelet mounts: /etc/hosts, /etc/hostname, /etc/resolv.conf (the
  node's with hostNetwork), /dev/termination-log.

`host_paths` maps a hostPath to where it is on this node for the test (the runtime state
directories live in the PodHost's prefix, so the host's real ones are never touched).
Not modelled: the host's device nodes of a privileged container (the agent opens none),
probes (the caller polls them), image pulls, subPath.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes.utils import parse_quantity

from sensor import cgroups
from tests.k8s_pods import CONTAINERD, Container, Pod, PodHost

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
CRITICAL_PRIORITY = ("system-node-critical", "system-cluster-critical")
# containerd's (and Docker's) default capabilities of an unprivileged container
DEFAULT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
                "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE")
MASKED_PATHS = ("/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                "/sys/devices/virtual/powercap")
READONLY_PATHS = ("/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
PROPAGATION = {None: "rprivate", "None": "rprivate", "HostToContainer": "rslave", "Bidirectional": "rshared"}


class KubeletError(Exception):
    """The pod cannot be started as specified (the kubelet or containerd would refuse it too)."""


# -- the image -----------------------------------------------------------------------------
@dataclass(frozen=True)
class OciImage:
    """An image of an OCI layout, unpacked once: its root filesystem and its config."""

    rootfs: Path
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[str, ...]
    workdir: str
    user: str

    @classmethod
    def unpack(cls, layout: Path, tag: str, dest: Path) -> OciImage:
        """`umoci unpack` the tagged image into `dest` (a bundle directory) and read its config."""
        out = subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(dest)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise KubeletError(f"umoci unpack {layout}:{tag}: {out.stderr.strip()}")
        config = image_config(layout, tag).get("config", {})
        return cls(rootfs=dest / "rootfs", entrypoint=tuple(config.get("Entrypoint") or ()),
                   cmd=tuple(config.get("Cmd") or ()), env=tuple(config.get("Env") or ()),
                   workdir=config.get("WorkingDir") or "/", user=config.get("User") or "")


def image_config(layout: Path, tag: str) -> dict[str, Any]:
    """The image configuration (OCI image-spec config.json) of `tag` in an OCI layout."""
    def blob(digest: str) -> dict[str, Any]:
        algo, hexd = digest.split(":", 1)
        return json.loads((layout / "blobs" / algo / hexd).read_text())

    index = json.loads((layout / "index.json").read_text())
    for desc in index.get("manifests", []):
        if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return blob(blob(desc["digest"])["config"]["digest"])
    raise KubeletError(f"{layout}: no image tagged {tag!r}")


# -- the node ------------------------------------------------------------------------------
@dataclass
class Node:
    """What the kubelet knows of its node and cluster."""

    name: str = field(default_factory=lambda: socket.gethostname().lower())
    host_paths: dict[str, str] = field(default_factory=dict)
    api_host: str | None = None          # the `kubernetes` Service (env and token only with it)
    api_port: int = 443
    token: str | None = None
    ca_crt: str | None = None


def _capabilities_held() -> list[str]:
    """This process's effective capabilities as OCI names (containerd's current-caps rule)."""
    eff = next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("CapEff:"))
    out = subprocess.run(["capsh", f"--decode={eff}"], check=True, capture_output=True, text=True).stdout
    names = out.strip().split("=", 1)[1]
    return sorted(f"CAP_{n.removeprefix('cap_').upper()}" for n in names.split(",") if n)


def _mount_of(path: str) -> tuple[str, str]:
    """(mount point, optional fields) of the mount holding `path` (/proc/self/mountinfo)."""
    real = os.path.realpath(path)
    best = ("", "")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left = line.split(" - ", 1)[0].split()
        point, optional = left[4], " ".join(left[6:])
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best[0]):
            best = (point, optional)
    return best


def _check_host_path(name: str, path: str, kind: str) -> None:
    p = Path(path)
    if kind == "DirectoryOrCreate":
        p.mkdir(mode=0o755, parents=True, exist_ok=True)
    elif kind == "FileOrCreate":
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch(exist_ok=True)
    elif kind == "Directory" and not p.is_dir():
        raise KubeletError(f"volume {name}: hostPath type check failed: {path} is not a directory")
    elif kind == "File" and not p.is_file():
        raise KubeletError(f"volume {name}: hostPath type check failed: {path} is not a file")
    elif kind == "Socket" and not p.is_socket():
        raise KubeletError(f"volume {name}: hostPath type check failed: {path} is not a socket")
    elif kind in ("", None) and not p.exists():
        p.mkdir(mode=0o755, parents=True)      # containerd creates a missing bind source


class ConfigMapDir:
    """A directory laid out as the kubelet mounts a ConfigMap: files are symlinks through
    `..data`, which points at a timestamped directory and is swapped atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._n = 0

    def publish(self, files: dict[str, str]) -> None:
        """Write a new version of every file and swap `..data` to it (as the kubelet does)."""
        self._n += 1
        version = self.root / f"..2026_12_01_00_00_{self._n:02d}.{os.getpid()}"
        version.mkdir()
        for name, text in files.items():
            (version / name).write_text(text)
            (version / name).chmod(0o644)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(version.name)
        old = (self.root / "..data").resolve() if (self.root / "..data").exists() else None
        os.rename(tmp, self.root / "..data")
        for name in files:
            link = self.root / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")
        if old is not None:
            shutil.rmtree(old)


# -- the translation -----------------------------------------------------------------------
def _qos(containers: list[dict[str, Any]]) -> str:
    """The pod's QoS class as the kubelet derives it (cgroup directory name)."""
    requests = [c.get("resources", {}).get("requests", {}) for c in containers]
    limits = [c.get("resources", {}).get("limits", {}) for c in containers]
    if not any(requests) and not any(limits):
        return "besteffort"
    guaranteed = all(lim.get(r) is not None and (req.get(r) in (None, lim.get(r)))
                     for req, lim in zip(requests, limits) for r in ("cpu", "memory"))
    return "guaranteed" if guaranteed else "burstable"


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion in command, args and env values (`$$` escapes)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


class KubeletPod:
    """One pod of a rendered DaemonSet (its first container), laid out and run with runc."""

    def __init__(self, objects: list[dict[str, Any]], image: OciImage, host: PodHost, workdir: Path,
                 node: Node, *, kind: str = "DaemonSet") -> None:
        workload = next(o for o in objects if o["kind"] == kind)
        self.template = workload["spec"]["template"]
        self.pod_spec: dict[str, Any] = self.template["spec"]
        self.container: dict[str, Any] = self.pod_spec["containers"][0]
        self.namespace = workload["metadata"].get("namespace", "default")
        self.configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
        self.image, self.host, self.workdir, self.node = image, host, workdir, node
        self.pod: Pod = host.pod(f"{workload['metadata']['name']}-{os.getpid() % 100000:05d}", self.namespace,
                                 qos=_qos(self.pod_spec["containers"]),
                                 labels=dict(self.template.get("metadata", {}).get("labels", {})),
                                 owner=(kind, workload["metadata"]["name"]),
                                 service_account=self.pod_spec.get("serviceAccountName", "default"))
        self.configmap_dirs: dict[str, ConfigMapDir] = {}
        self.running: Container | None = None
        self.started_at = 0.0

    @property
    def security(self) -> dict[str, Any]:
        return self.container.get("securityContext", {})

    @property
    def privileged(self) -> bool:
        return bool(self.security.get("privileged"))

    def field_ref(self, path: str) -> str:
        """A downward-API field of this pod."""
        values = {"spec.nodeName": self.node.name, "metadata.name": self.pod.name,
                  "metadata.namespace": self.namespace, "metadata.uid": self.pod.uid,
                  "spec.serviceAccountName": self.pod.service_account,
                  "status.hostIP": "127.0.0.1", "status.podIP": "127.0.0.1"}
        if path not in values:
            raise KubeletError(f"env fieldRef {path}: not modelled")
        return values[path]

    # -- process ---------------------------------------------------------------------------
    def env(self) -> list[str]:
        env: dict[str, str] = dict(e.split("=", 1) for e in self.image.env)
        env["HOSTNAME"] = self.node.name if self.pod_spec.get("hostNetwork") else self.pod.name
        if self.node.api_host:
            host, port = self.node.api_host, str(self.node.api_port)
            env.update({"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port,
                        "KUBERNETES_SERVICE_PORT_HTTPS": port, "KUBERNETES_PORT": f"tcp://{host}:{port}"})
        for item in self.container.get("env", []):
            if "value" in item:
                env[item["name"]] = _expand(item["value"], env)
            elif "fieldRef" in item.get("valueFrom", {}):
                env[item["name"]] = self.field_ref(item["valueFrom"]["fieldRef"]["fieldPath"])
            else:
                raise KubeletError(f"env {item['name']}: only value and fieldRef are modelled")
        return [f"{k}={v}" for k, v in env.items()]

    def args(self, env: list[str]) -> list[str]:
        values = dict(e.split("=", 1) for e in env)
        command = self.container.get("command")
        args = self.container.get("args")
        if command is not None:
            argv = list(command) + list(args or [])
        else:
            argv = list(self.image.entrypoint) + list(args if args is not None else self.image.cmd)
        if not argv:
            raise KubeletError("no command: neither the container nor the image names one")
        return [_expand(a, values) for a in argv]

    def capabilities(self) -> list[str]:
        if self.privileged:
            return _capabilities_held()
        caps = self.security.get("capabilities", {})
        drop = {c.upper().removeprefix("CAP_") for c in caps.get("drop", [])}
        base = set() if "ALL" in drop else set(DEFAULT_CAPS) - drop
        base |= {c.upper().removeprefix("CAP_") for c in caps.get("add", [])}
        return sorted(f"CAP_{c}" for c in base)

    def process(self) -> dict[str, Any]:
        env = self.env()
        caps = self.capabilities()
        sec = self.security
        uid = sec.get("runAsUser", int(self.image.user.split(":")[0]) if self.image.user.isdigit() else 0)
        proc: dict[str, Any] = {
            "terminal": False, "user": {"uid": uid, "gid": sec.get("runAsGroup", 0)},
            "args": self.args(env), "env": env,
            "cwd": self.container.get("workingDir") or self.image.workdir,
            "capabilities": {"bounding": caps, "effective": caps if uid == 0 else [],
                             "permitted": caps if uid == 0 else []},
            "noNewPrivileges": sec.get("allowPrivilegeEscalation") is False and not self.privileged,
        }
        # lowering it needs CAP_SYS_RESOURCE, which a node in a sandbox may lack (a kubelet
        # there ignores the error, as with its KubeletInUserNamespace gate)
        if self.pod_spec.get("priorityClassName") in CRITICAL_PRIORITY and "CAP_SYS_RESOURCE" in _capabilities_held():
            proc["oomScoreAdj"] = -997
        seccomp = (sec.get("seccompProfile") or self.pod_spec.get("securityContext", {}).get("seccompProfile")
                   or {"type": "Unconfined"})
        if seccomp["type"] != "Unconfined" and not self.privileged:
            raise KubeletError(f"seccompProfile {seccomp['type']}: not modelled (the overlay should say Unconfined)")
        return proc

    # -- mounts ----------------------------------------------------------------------------
    def default_mounts(self) -> list[dict[str, Any]]:
        rw = "rw" if self.privileged else "ro"
        return [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", rw]},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", rw]},
        ]

    def _host_path_mount(self, vol: dict[str, Any], vm: dict[str, Any]) -> dict[str, Any]:
        hp = vol["hostPath"]
        source = self.node.host_paths.get(hp["path"], hp["path"])
        _check_host_path(vol["name"], source, hp.get("type", ""))
        prop = vm.get("mountPropagation")
        if prop not in PROPAGATION:
            raise KubeletError(f"volumeMount {vm['name']}: unknown mountPropagation {prop!r}")
        if prop == "Bidirectional" and not self.privileged:
            raise KubeletError(f"volumeMount {vm['name']}: Bidirectional mount propagation is available "
                               "only to privileged containers (the API server refuses the pod)")
        if prop in ("Bidirectional", "HostToContainer"):
            point, optional = _mount_of(source)
            wanted = ("shared:",) if prop == "Bidirectional" else ("shared:", "master:")
            if not any(w in optional for w in wanted):
                raise KubeletError(f"volumeMount {vm['name']}: path {source} is mounted on {point} but it "
                                   f"is not a {'shared' if prop == 'Bidirectional' else 'shared or slave'} "
                                   "mount (containerd refuses it; `mount --make-shared " + point + "`)")
        return {"destination": vm["mountPath"], "type": "bind", "source": source,
                "options": ["rbind", "ro" if vm.get("readOnly") else "rw", PROPAGATION[prop]]}

    def _volume_mount(self, vol: dict[str, Any], vm: dict[str, Any]) -> dict[str, Any]:
        if "subPath" in vm:
            raise KubeletError(f"volumeMount {vm['name']}: subPath is not modelled")
        name = vol["name"]
        if "hostPath" in vol:
            return self._host_path_mount(vol, vm)
        if "configMap" in vol:
            cm = vol["configMap"]["name"]
            if cm not in self.configmaps:
                raise KubeletError(f"volume {name}: configmap {cm!r} not found")
            cdir = self.configmap_dirs.setdefault(name, ConfigMapDir(self.workdir / "volumes/configmap" / name))
            cdir.publish(dict(self.configmaps[cm]))
            return {"destination": vm["mountPath"], "type": "bind", "source": str(cdir.root),
                    "options": ["rbind", "ro", "rprivate"]}
        if "emptyDir" in vol:
            ed = vol["emptyDir"] or {}
            if ed.get("medium") == "Memory":
                opts = ["nosuid", "nodev", "mode=1777"]
                if "sizeLimit" in ed:
                    opts.append(f"size={int(parse_quantity(ed['sizeLimit']))}")
                return {"destination": vm["mountPath"], "type": "tmpfs", "source": "tmpfs", "options": opts}
            path = self.workdir / "volumes/empty-dir" / name
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)
            return {"destination": vm["mountPath"], "type": "bind", "source": str(path),
                    "options": ["rbind", "ro" if vm.get("readOnly") else "rw", "rprivate"]}
        raise KubeletError(f"volume {name}: only hostPath, configMap and emptyDir are modelled")

    def _kubelet_files(self) -> list[dict[str, Any]]:
        """/etc/hosts, /etc/hostname, /etc/resolv.conf, /dev/termination-log (and the token)."""
        files = self.workdir / "kubelet"
        files.mkdir(parents=True, exist_ok=True)
        host_net = bool(self.pod_spec.get("hostNetwork"))
        (files / "hosts").write_text(Path("/etc/hosts").read_text() if host_net else
                                     f"127.0.0.1\tlocalhost\n127.0.0.1\t{self.pod.name}\n")
        (files / "hostname").write_text((self.node.name if host_net else self.pod.name) + "\n")
        resolv = Path("/etc/resolv.conf")
        (files / "resolv.conf").write_text(resolv.read_text() if resolv.exists() else "")
        (files / "termination-log").touch()
        mounts = [{"destination": f"/etc/{n}", "type": "bind", "source": str(files / n),
                   "options": ["rbind", "rprivate", "rw"]} for n in ("hosts", "hostname", "resolv.conf")]
        mounts.append({"destination": "/dev/termination-log", "type": "bind",
                       "source": str(files / "termination-log"), "options": ["rbind", "rprivate", "rw"]})
        if self.node.token is not None and self.pod_spec.get("automountServiceAccountToken", True):
            sa = self.workdir / "volumes/projected/kube-api-access"
            sa.mkdir(parents=True, exist_ok=True)
            (sa / "token").write_text(self.node.token)
            (sa / "ca.crt").write_text(self.node.ca_crt or "")
            (sa / "namespace").write_text(self.namespace)
            mounts.append({"destination": SERVICE_ACCOUNT_DIR, "type": "bind", "source": str(sa),
                           "options": ["rbind", "rprivate", "ro"]})
        return mounts

    def mounts(self) -> list[dict[str, Any]]:
        volumes = {v["name"]: v for v in self.pod_spec.get("volumes", [])}
        user = []
        for vm in self.container.get("volumeMounts", []):
            if vm["name"] not in volumes:
                raise KubeletError(f"volumeMount {vm['name']}: no such volume in the pod")
            user.append(self._volume_mount(volumes[vm["name"]], vm))
        user += self._kubelet_files()
        taken = {m["destination"] for m in user}
        defaults = [m for m in self.default_mounts() if m["destination"] not in taken]
        # containerd sorts the user's mounts so that a parent is mounted before its children
        return defaults + sorted(user, key=lambda m: len(Path(m["destination"]).parts))

    # -- the whole spec --------------------------------------------------------------------
    def resources(self) -> dict[str, Any]:
        res = self.container.get("resources", {})
        limits, requests = res.get("limits", {}), res.get("requests", {})
        out: dict[str, Any] = {"devices": [{"allow": self.privileged, "access": "rwm"}]}
        if "memory" in limits:
            out["memory"] = {"limit": int(parse_quantity(limits["memory"]))}
        cpu: dict[str, Any] = {}
        if "cpu" in requests or "cpu" in limits:
            milli = parse_quantity(requests.get("cpu", limits.get("cpu"))) * 1000
            cpu["shares"] = max(2, int(milli * 1024 / 1000))
        if "cpu" in limits:
            cpu.update(period=100000, quota=int(parse_quantity(limits["cpu"]) * 100000))
        if cpu:
            out["cpu"] = cpu
        return out

    def namespaces(self) -> list[dict[str, str]]:
        ns = [{"type": "mount"}]
        if not self.pod_spec.get("hostPID"):
            ns.append({"type": "pid"})
        if not self.pod_spec.get("hostNetwork"):
            ns += [{"type": "network"}, {"type": "uts"}]
        if not self.pod_spec.get("hostIPC"):
            ns.append({"type": "ipc"})
        if str(cgroups.mount()) == "/sys/fs/cgroup" and not self.privileged:
            ns.append({"type": "cgroup"})
        return ns

    def spec(self) -> dict[str, Any]:
        """The OCI runtime spec (config.json) of the container."""
        mounts = self.mounts()
        props = {o for m in mounts for o in m.get("options", []) if o in ("rshared", "rslave")}
        linux: dict[str, Any] = {"namespaces": self.namespaces(), "resources": self.resources()}
        if props:
            linux["rootfsPropagation"] = "rshared" if "rshared" in props else "rslave"
        if not self.privileged:
            linux["maskedPaths"] = list(MASKED_PATHS)
            linux["readonlyPaths"] = list(READONLY_PATHS)
        spec: dict[str, Any] = {
            "ociVersion": "1.0.2-dev", "process": self.process(),
            "root": {"path": str(self.image.rootfs), "readonly": bool(self.security.get("readOnlyRootFilesystem"))},
            "mounts": mounts, "linux": linux,
        }
        if not self.pod_spec.get("hostNetwork"):
            spec["hostname"] = self.pod.name
        return spec

    # -- life ------------------------------------------------------------------------------
    def start(self) -> Container:
        """Lay out the volumes, write the spec and `runc run` it (logs in workdir/*.log)."""
        spec = self.spec()
        (self.workdir / "config.json").write_text(json.dumps(spec, indent=1))   # for the reader of a failure
        self.started_at = time.monotonic()
        self.running = self.host.run_spec(
            self.pod, spec, name=self.container["name"], image=self.container["image"], runtime=CONTAINERD,
            stdout=(self.workdir / "stdout.log").open("w"), stderr=(self.workdir / "stderr.log").open("w"))
        return self.running

    @property
    def stdout(self) -> str:
        return (self.workdir / "stdout.log").read_text()

    @property
    def stderr(self) -> str:
        return (self.workdir / "stderr.log").read_text()

    def pid(self) -> int:
        """The container's init process (a host pid: hostPID)."""
        assert self.running is not None
        out = subprocess.run(["runc", "--root", str(self.running.runc_root), "state", self.running.id],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise KubeletError(f"runc state: {out.stderr.strip()}")
        return int(json.loads(out.stdout)["pid"])

    def stop(self) -> tuple[int, float]:
        """What the kubelet does on pod deletion: SIGTERM, then SIGKILL after
        terminationGracePeriodSeconds. (exit code, seconds from SIGTERM to exit)."""
        assert self.running is not None
        grace = float(self.pod_spec.get("terminationGracePeriodSeconds", 30))
        c = self.running
        sent = time.monotonic()
        subprocess.run(["runc", "--root", str(c.runc_root), "kill", c.id, "TERM"], capture_output=True)
        try:
            code = c.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            subprocess.run(["runc", "--root", str(c.runc_root), "kill", c.id, "KILL"], capture_output=True)
            code = c.proc.wait(timeout=10)
        return code, time.monotonic() - sent

    def close(self) -> None:
        """Remove the container and its cgroups (PodHost); the volumes go with workdir."""
        self.host.remove_pod(self.pod)
