"""Container and pod identity from cgroup paths (id -> path mapping: sensor.cgroups).

Recognised layouts (the last path component that names a 64-hex container id wins):
Docker (`/docker/<id>`, `docker-<id>.scope`), containerd/CRI (`cri-containerd-<id>.scope`,
`/kubepods/.../pod<uid>/<id>`), CRI-O (`crio-<id>.scope`), podman/libpod
(`libpod-<id>.scope`) and plain runc paths ending in the id. Anything else is `host`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from sensor.cgroups import CgroupIndex

HOST = "host"
_CONTAINER_RE = re.compile(
    r"(?:^|[/-])(?:docker-|cri-containerd-|crio-|libpod-|containerd-)?([0-9a-f]{64})(?:\.scope)?$"
)
_POD_RE = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")


@dataclass(frozen=True, slots=True)
class CgroupIdentity:
    """What a cgroup path says about the workload in it."""

    container_id: str = HOST
    pod_uid: str | None = None


def identity_from_path(path: str) -> CgroupIdentity:
    """Parse a cgroup path (from /proc/PID/cgroup or the cgroup2 tree)."""
    container = HOST
    for part in reversed(path.rstrip("/").split("/")):
        m = _CONTAINER_RE.search(part)
        if m:
            container = m.group(1)[:12]
            break
    pod = _POD_RE.search(path)
    return CgroupIdentity(container, pod.group(1).replace("_", "-") if pod else None)


class CgroupResolver(CgroupIndex):
    """Cgroup ids -> container/pod identity, cached (the id -> path walk is CgroupIndex's).

    `hybrid`: the host has cgroup v1 hierarchies too (`sensor.cgroups.v1_hierarchies`),
    where a runtime may name a container that the process's cgroup2 path does not, so
    a cgroup2 path naming none does not prove the host (True unless told otherwise).
    """

    def __init__(self, mount: str | Path | None, rescan_interval_s: float = 1.0, *,
                 hybrid: bool = True) -> None:
        super().__init__(mount, rescan_interval_s)
        self.hybrid = hybrid
        self._identities: dict[int, CgroupIdentity] = {}

    def identity(self, cgroup_id: int) -> CgroupIdentity | None:
        """Container/pod identity of a cgroup id, or None when the id is unknown."""
        ident = self._identities.get(cgroup_id)
        if ident is None:
            path = self.path(cgroup_id)
            if path is None:
                return None
            ident = self._identities[cgroup_id] = identity_from_path(path)
        return ident


def identity_from_cgroup_file(text: str) -> CgroupIdentity:
    """Identity from the text of a /proc/PID/cgroup file: every hierarchy's path (v1 paths
    too, for hybrid hosts); the first naming a container wins."""
    best = CgroupIdentity()
    for line in text.splitlines():
        ident = identity_from_path(line.split(":", 2)[-1])
        if ident.container_id != HOST:
            return ident
        if ident.pod_uid and not best.pod_uid:
            best = ident
    return best


def identity_from_proc(pid: int, proc_root: str = "/proc") -> CgroupIdentity:
    """Identity from every hierarchy in /proc/PID/cgroup (host when the process is gone)."""
    try:
        with open(f"{proc_root}/{pid}/cgroup", encoding="utf-8") as fh:
            return identity_from_cgroup_file(fh.read())
    except OSError:
        return CgroupIdentity()


class ProcIdentity:
    """`identity_from_proc` for the hot path: the parse is cached by the file's bytes.

    The processes of one container (or one host service) have the same cgroup file, so
    after the first of them a process costs one read of /proc/PID/cgroup and a dict
    lookup (a build's thousands of compilers: one parse).
    """

    MAX_CACHED = 4096

    def __init__(self, proc_root: str = "/proc") -> None:
        self.proc_root = proc_root
        self._by_file: dict[bytes, CgroupIdentity] = {}

    def __call__(self, pid: int) -> CgroupIdentity:
        try:
            fd = os.open(f"{self.proc_root}/{pid}/cgroup", os.O_RDONLY | os.O_CLOEXEC)
            try:
                raw = chunk = os.read(fd, 8192)
                while len(chunk) == 8192:   # never on real hosts (a few hundred bytes)
                    chunk = os.read(fd, 8192)
                    raw += chunk
            finally:
                os.close(fd)
        except OSError:
            return CgroupIdentity()
        ident = self._by_file.get(raw)
        if ident is None:
            if len(self._by_file) >= self.MAX_CACHED:
                self._by_file.clear()
            ident = self._by_file[raw] = identity_from_cgroup_file(raw.decode("utf-8", "replace"))
        return ident
