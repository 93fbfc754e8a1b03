"""cgroup v2: where the hierarchy is mounted, cgroup ids <-> paths, a process's cgroup.

A cgroup id is the inode number of its cgroup2 directory (what
`bpf_get_current_cgroup_id()` returns). Container identity (hot path), the /proc
reader and enforcement scopes all use this one module.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from sensor.errors import SensorError

MOUNTS_FILE = "/proc/mounts"


class CgroupError(SensorError):
    """A cgroup2 lookup failed (no cgroup2 mount, missing cgroup, unreadable /proc)."""


def find_mount(mounts_file: str = MOUNTS_FILE) -> Path | None:
    """Mount point of the cgroup2 hierarchy (/sys/fs/cgroup, or a hybrid's .../unified), or None."""
    try:
        with open(mounts_file, encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "cgroup2":
                    return Path(parts[1])
    except OSError:
        return None
    return None


def mount(mounts_file: str = MOUNTS_FILE) -> Path:
    """Mount point of the cgroup2 hierarchy; CgroupError when there is none."""
    found = find_mount(mounts_file)
    if found is None:
        raise CgroupError("no cgroup2 filesystem is mounted (see `netvigil doctor`)")
    return found


def resolve(path: str | Path, root: Path | None = None) -> Path:
    """A cgroup directory: absolute inside the mount, or relative to the cgroup2 mount."""
    root = root or mount()
    p = Path(path)
    full = p if p.is_absolute() and (p == root or root in p.parents) else root / str(path).lstrip("/")
    if not full.is_dir():
        raise CgroupError(f"cgroup {path} does not exist (looked for {full})")
    return full


def cgroup_id(path: str | Path) -> int:
    """The cgroup id of a cgroup2 directory."""
    try:
        return os.stat(path).st_ino
    except OSError as exc:
        raise CgroupError(f"cannot stat cgroup {path}: {exc}") from None


def v1_hierarchies(self_cgroup: str = "/proc/self/cgroup") -> list[str]:
    """The kernel's cgroup v1 hierarchies (controllers or `name=`), empty on a cgroup2-only
    host: every process is in every hierarchy, so the lines of one /proc/PID/cgroup other
    than cgroup2's `0::` list them all (the agent's own file works in any mount namespace)."""
    try:
        with open(self_cgroup, encoding="utf-8") as fh:
            return [parts[1] for parts in (line.split(":", 2) for line in fh)
                    if len(parts) == 3 and parts[0] != "0"]
    except OSError:
        return []


def _v2_path(pid: int, proc_root: str) -> str | None:
    """The cgroup2 line (`0::PATH`) of /proc/PID/cgroup; None when unreadable or absent."""
    try:
        with open(f"{proc_root}/{pid}/cgroup", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        return None
    return None


def proc_cgroup_path(pid: int, root: Path | None = None, proc_root: str = "/proc") -> Path:
    """The cgroup2 directory of a process; CgroupError when it is gone or has none."""
    root = root or mount()
    rel = _v2_path(pid, proc_root)
    if rel is None:
        raise CgroupError(f"pid {pid} has no readable cgroup2 membership")
    return root / rel.lstrip("/")


def pid_cgroup_id(pid: int, root: str | Path | None, proc_root: str = "/proc") -> int:
    """The cgroup id of a process, 0 when unknown (no mount, process gone)."""
    if not root:
        return 0
    rel = _v2_path(pid, proc_root)
    if rel is None:
        return 0
    try:
        return os.stat(os.path.join(root, rel.lstrip("/"))).st_ino
    except OSError:
        return 0


def pid_cgroup_id_reader(root: str | Path | None, proc_root: str = "/proc") -> Callable[[int], int]:
    """pid -> cgroup id (0 when unknown), bound to one mount and /proc."""
    return lambda pid: pid_cgroup_id(pid, root, proc_root)


class CgroupIndex:
    """Maps cgroup ids to paths by walking the cgroup2 tree, cached.

    The first miss of an id rescans the tree; further misses of the same id rescan at
    most every `rescan_interval_s`, so a burst of events from a cgroup that vanished
    costs one walk, not one per event. `mount=None` is a host without cgroup2: every
    lookup misses.
    """

    def __init__(self, mount: str | Path | None, rescan_interval_s: float = 1.0) -> None:
        self.mount = Path(mount) if mount else None
        self._paths: dict[int, str] = {}
        self._interval = rescan_interval_s
        self._missed: dict[int, float] = {}

    def _scan(self) -> None:
        if self.mount is None:
            return
        root = str(self.mount)
        paths: dict[int, str] = {}
        for dirpath, _dirs, _files in os.walk(root):
            try:
                rel = os.path.relpath(dirpath, root)
                paths[os.stat(dirpath).st_ino] = "/" if rel == "." else "/" + rel
            except OSError:
                continue
        self._paths = paths

    def _rescan_for(self, cgid: int) -> None:
        now = time.monotonic()
        if now - self._missed.get(cgid, -self._interval) >= self._interval:
            if len(self._missed) > 4096:
                self._missed.clear()
            self._missed[cgid] = now
            self._scan()

    def path(self, cgid: int) -> str | None:
        """The cgroup path relative to the mount (starting with /), if known (not re-checked)."""
        found = self._paths.get(cgid)
        if found is None:
            self._rescan_for(cgid)
            found = self._paths.get(cgid)
        return found

    def full_path(self, cgid: int) -> Path | None:
        """The cgroup directory of an id, or None if it no longer exists."""
        if self.mount is None:
            return None
        rel = self._paths.get(cgid)
        if rel is None or not (self.mount / rel.lstrip("/")).is_dir():
            self._rescan_for(cgid)
            rel = self._paths.get(cgid)
        if rel is None:
            return None
        full = self.mount / rel.lstrip("/")
        return full if full.is_dir() else None

    def parent_of(self, cgid: int) -> int | None:
        """Id of the parent cgroup (None for the root or unknown ids)."""
        p = self.full_path(cgid)
        if p is None or p == self.mount:
            return None
        try:
            return cgroup_id(p.parent)
        except CgroupError:
            return None
