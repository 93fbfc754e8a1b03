"""cgroup v2 helpers: find the mount, map paths to ids and back."""
from __future__ import annotations

import os
from pathlib import Path

from sensor.enforcement.errors import EnforcementError


def cgroup2_mount(mounts_file: str = "/proc/mounts") -> Path:
    """Mount point of the cgroup2 hierarchy (e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified)."""
    try:
        with open(mounts_file, encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == "cgroup2":
                    return Path(parts[1])
    except OSError as exc:
        raise EnforcementError(f"cannot read {mounts_file}: {exc}") from None
    raise EnforcementError("no cgroup2 filesystem is mounted (see `netvigil doctor`)")


def resolve(path: str | Path, mount: Path | None = None) -> Path:
    """A cgroup path: absolute inside the mount, or relative to the cgroup2 mount."""
    mount = mount or cgroup2_mount()
    p = Path(path)
    if p.is_absolute() and (p == mount or mount in p.parents):
        full = p
    else:
        full = mount / str(path).lstrip("/")
    if not full.is_dir():
        raise EnforcementError(f"cgroup {path} does not exist (looked for {full})")
    return full


def cgroup_id(path: str | Path) -> int:
    """The cgroup id of a cgroup2 directory (its inode number, as bpf_get_current_cgroup_id)."""
    try:
        return os.stat(path).st_ino
    except OSError as exc:
        raise EnforcementError(f"cannot stat cgroup {path}: {exc}") from None


def proc_cgroup_path(pid: int, mount: Path | None = None) -> Path:
    """The cgroup2 directory of a process."""
    mount = mount or cgroup2_mount()
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as fh:
            for line in fh:
                hid, _, rest = line.rstrip("\n").partition(":")
                ctrl, _, rel = rest.partition(":")
                if hid == "0" and ctrl == "":
                    return mount / rel.lstrip("/")
    except OSError as exc:
        raise EnforcementError(f"cannot read cgroup of pid {pid}: {exc}") from None
    raise EnforcementError(f"pid {pid} has no cgroup2 membership")


class CgroupIndex:
    """Maps cgroup ids to paths (and parents) by walking the cgroup2 tree on demand."""

    def __init__(self, mount: Path | None = None) -> None:
        self.mount = mount or cgroup2_mount()
        self._paths: dict[int, Path] = {}

    def path_of(self, cgid: int) -> Path | None:
        """Path of a cgroup id, or None if it no longer exists."""
        p = self._paths.get(cgid)
        if p is not None and p.is_dir():
            return p
        self._rescan()
        return self._paths.get(cgid)

    def parent_of(self, cgid: int) -> int | None:
        """Id of the parent cgroup (None for the root or unknown ids)."""
        p = self.path_of(cgid)
        if p is None or p == self.mount:
            return None
        return cgroup_id(p.parent)

    def _rescan(self) -> None:
        paths: dict[int, Path] = {}
        for root, _dirs, _files in os.walk(self.mount):
            try:
                paths[os.stat(root).st_ino] = Path(root)
            except OSError:
                continue
        self._paths = paths
