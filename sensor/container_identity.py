"""Container and pod identity from cgroup paths, and cgroup ids back to paths.

Recognised layouts (the last path component that names a 64-hex container id wins):
Docker (`/docker/<id>`, `docker-<id>.scope`), containerd/CRI (`cri-containerd-<id>.scope`,
`/kubepods/.../pod<uid>/<id>`), CRI-O (`crio-<id>.scope`), podman/libpod
(`libpod-<id>.scope`) and plain runc paths ending in the id. Anything else is `host`.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

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


def find_cgroup2_mount(mounts_file: str = "/proc/mounts") -> str | None:
    """Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` or a hybrid's `unified`)."""
    try:
        with open(mounts_file, encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "cgroup2":
                    return parts[1]
    except OSError:
        return None
    return None


class CgroupResolver:
    """Maps cgroup ids (cgroup2 directory inode numbers) to paths, caching a tree walk.

    The first miss of an id triggers a rescan; further misses of the same id rescan at
    most every `rescan_interval_s`, so a burst of events from a cgroup that vanished
    costs one walk, not one per event.
    """

    def __init__(self, mount: str | None, rescan_interval_s: float = 1.0) -> None:
        self.mount = mount
        self._paths: dict[int, str] = {}
        self._identities: dict[int, CgroupIdentity] = {}
        self._interval = rescan_interval_s
        self._missed: dict[int, float] = {}

    def _scan(self) -> None:
        if not self.mount:
            return
        paths: dict[int, str] = {}
        for dirpath, _dirs, _files in os.walk(self.mount):
            try:
                paths[os.stat(dirpath).st_ino] = "/" + os.path.relpath(dirpath, self.mount).lstrip(".")
            except OSError:
                continue
        self._paths = paths

    def path(self, cgroup_id: int) -> str | None:
        """The cgroup path (relative to the cgroup2 mount, starting with /), if known."""
        found = self._paths.get(cgroup_id)
        if found is None:
            now = time.monotonic()
            if now - self._missed.get(cgroup_id, -self._interval) >= self._interval:
                if len(self._missed) > 4096:
                    self._missed.clear()
                self._missed[cgroup_id] = now
                self._scan()
                found = self._paths.get(cgroup_id)
        return found

    def identity(self, cgroup_id: int) -> CgroupIdentity | None:
        """Container/pod identity of a cgroup id, or None when the id is unknown."""
        ident = self._identities.get(cgroup_id)
        if ident is None:
            path = self.path(cgroup_id)
            if path is None:
                return None
            ident = self._identities[cgroup_id] = identity_from_path(path)
        return ident


def identity_from_proc(pid: int, proc_root: str = "/proc") -> CgroupIdentity:
    """Identity from every hierarchy in /proc/PID/cgroup (v1 paths too, for hybrid hosts)."""
    try:
        with open(f"{proc_root}/{pid}/cgroup", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return CgroupIdentity()
    best = CgroupIdentity()
    for line in lines:
        path = line.split(":", 2)[-1]
        ident = identity_from_path(path)
        if ident.container_id != HOST:
            return ident
        if ident.pod_uid and not best.pod_uid:
            best = ident
    return best
