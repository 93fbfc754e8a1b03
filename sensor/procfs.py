"""Reading host processes (through psutil): the table's seed at start, its loader for
misses, and the agent's own CPU and memory figures."""
from __future__ import annotations

import os
import pwd
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import psutil

from sensor.boottime import process_start_boot_ns
from sensor.container_identity import CgroupIdentity, identity_from_proc
from sensor.process_table import ProcessRecord, make_exec_id

COMM_LEN = 15
"""TASK_COMM_LEN - 1: the length of a user process's comm, which exec events carry."""

_ATTRS = ("ppid", "name", "cmdline", "exe", "uids", "gids", "create_time")


def read_boot_id(path: str = "/proc/sys/kernel/random/boot_id") -> str:
    """The kernel's boot id (dashes removed)."""
    with open(path, encoding="ascii") as fh:
        return fh.read().strip().replace("-", "")


@lru_cache(maxsize=4096)
def user_name(uid: int) -> str:
    """The host's name for a uid, or the number as text."""
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return str(uid)


def _text(value: str) -> str:
    """psutil decodes /proc with surrogateescape; events carry U+FFFD, as the BPF decoder does."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class ProcReader:
    """Builds ProcessRecords of live processes (racy by nature: None when gone).

    Process fields come from psutil (which reads `psutil.PROCFS_PATH`, /proc); container
    identity and cgroup ids from `proc_root`/PID/cgroup (our own parsing).
    """

    def __init__(
        self,
        boot_id: str,
        boot_offset_ns: int,
        proc_root: str = "/proc",
        cgroup_id_of: Callable[[int], int] | None = None,
    ) -> None:
        self.boot_id = boot_id
        self.boot_offset_ns = boot_offset_ns
        self.proc_root = proc_root
        self._cgroup_id_of = cgroup_id_of

    def read(self, pid: int) -> ProcessRecord | None:
        """One process, or None when it vanished or cannot be read."""
        try:
            info = psutil.Process(pid).as_dict(_ATTRS, ad_value=None)
        except psutil.Error:  # NoSuchProcess (ZombieProcess included), AccessDenied
            return None
        if any(info[k] is None for k in ("ppid", "name", "uids", "gids", "create_time")):
            return None
        argv = [_text(a) for a in info["cmdline"] or ()]
        # psutil lengthens a 15-character comm from argv[0]; exec events carry the comm.
        # Only kernel threads (no argv) have longer names of their own.
        name = _text(info["name"])[:COMM_LEN] if argv else _text(info["name"])
        uid, gid = info["uids"].real, info["gids"].real
        start_ns = self.boot_offset_ns + process_start_boot_ns(info["create_time"])
        ident: CgroupIdentity = identity_from_proc(pid, self.proc_root)
        meta: dict[str, object] = {"user.name": user_name(uid)}
        if ident.pod_uid:
            meta["k8s.pod.uid"] = ident.pod_uid
        return ProcessRecord(
            exec_id=make_exec_id(self.boot_id, pid, start_ns),
            pid=pid,
            ppid=info["ppid"],
            parent_exec_id=None,
            name=name,
            exe=argv[0] if argv else name,
            exepath=_text(info["exe"] or ""),
            args=argv[1:],
            uid=uid,
            gid=gid,
            cgroup_id=self._cgroup_id_of(pid) if self._cgroup_id_of else 0,
            container_id=ident.container_id,
            start_ns=start_ns,
            meta=meta,
        )

    def pids(self) -> Iterator[int]:
        """Every process id now alive (threads excluded)."""
        yield from psutil.pids()

    def snapshot(self) -> list[ProcessRecord]:
        """Every readable process, with parents linked by exec_id, parents first."""
        records = {r.pid: r for r in map(self.read, self.pids()) if r is not None}
        for record in records.values():
            parent = records.get(record.ppid)
            if parent is not None and parent is not record:
                record.parent_exec_id = parent.exec_id
        ordered: list[ProcessRecord] = []
        seen: set[int] = set()

        def visit(rec: ProcessRecord) -> None:
            chain = []
            while rec.pid not in seen:
                seen.add(rec.pid)
                chain.append(rec)
                parent = records.get(rec.ppid)
                if parent is None:
                    break
                rec = parent
            ordered.extend(reversed(chain))

        for rec in records.values():
            visit(rec)
        return ordered


@dataclass(frozen=True)
class ProcessUsage:
    """CPU seconds and memory of one process."""

    cpu_user_s: float
    cpu_system_s: float
    rss_bytes: int
    threads: int

    @property
    def cpu_s(self) -> float:
        """User plus system CPU seconds."""
        return self.cpu_user_s + self.cpu_system_s


def process_usage(pid: int | None = None) -> ProcessUsage:
    """CPU seconds, RSS and threads of a process: the agent itself unless `pid` is given.

    Raises psutil.NoSuchProcess when `pid` is gone.
    """
    proc = psutil.Process(os.getpid() if pid is None else pid)
    with proc.oneshot():
        cpu = proc.cpu_times()
        return ProcessUsage(cpu.user, cpu.system, proc.memory_info().rss, proc.num_threads())
