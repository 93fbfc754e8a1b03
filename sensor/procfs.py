"""Reading processes from /proc: the table's seed at start and its loader for misses."""
from __future__ import annotations

import os
import pwd
from collections.abc import Callable, Iterator
from functools import lru_cache

from sensor.container_identity import CgroupIdentity, identity_from_proc
from sensor.process_table import ProcessRecord, make_exec_id

_CLK_TCK = os.sysconf("SC_CLK_TCK")


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


class ProcReader:
    """Builds ProcessRecords from /proc/PID files (racy by nature: None when gone)."""

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
        """One process, or None when it vanished or is a kernel thread we cannot read."""
        base = f"{self.proc_root}/{pid}"
        try:
            with open(f"{base}/stat", "rb") as fh:
                stat = fh.read().decode("utf-8", "replace")
            with open(f"{base}/cmdline", "rb") as fh:
                argv = [a.decode("utf-8", "replace") for a in fh.read().split(b"\0")[:-1]]
            uid = gid = -1
            with open(f"{base}/status", encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if line.startswith("Uid:"):
                        uid = int(line.split()[1])
                    elif line.startswith("Gid:"):
                        gid = int(line.split()[1])
                        break
        except (OSError, ValueError):
            return None
        try:
            exepath = os.readlink(f"{base}/exe")
        except OSError:
            exepath = ""
        lpar, rpar = stat.find("("), stat.rfind(")")
        name = stat[lpar + 1 : rpar]
        rest = stat[rpar + 2 :].split()
        ppid = int(rest[1])
        start_ns = self.boot_offset_ns + int(rest[19]) * 1_000_000_000 // _CLK_TCK
        ident: CgroupIdentity = identity_from_proc(pid, self.proc_root)
        meta: dict[str, object] = {"user.name": user_name(uid)}
        if ident.pod_uid:
            meta["k8s.pod.uid"] = ident.pod_uid
        return ProcessRecord(
            exec_id=make_exec_id(self.boot_id, pid, start_ns),
            pid=pid,
            ppid=ppid,
            parent_exec_id=None,
            name=name,
            exe=argv[0] if argv else name,
            exepath=exepath,
            args=argv[1:],
            uid=uid,
            gid=gid,
            cgroup_id=self._cgroup_id_of(pid) if self._cgroup_id_of else 0,
            container_id=ident.container_id,
            start_ns=start_ns,
            meta=meta,
        )

    def pids(self) -> Iterator[int]:
        """Every process id now in /proc (threads excluded)."""
        for entry in os.listdir(self.proc_root):
            if entry.isdigit():
                yield int(entry)

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


def socket_local_address(pid: int, fd: int, proc_root: str = "/proc") -> tuple[str, int] | None:
    """Local (ip, port) of a process's TCP socket, read from /proc/net (slow path only)."""
    import socket as _socket  # noqa: PLC0415

    try:
        target = os.readlink(f"{proc_root}/{pid}/fd/{fd}")
    except OSError:
        return None
    if not target.startswith("socket:["):
        return None
    inode = target[8:-1]
    for name, family in (("tcp", _socket.AF_INET), ("tcp6", _socket.AF_INET6)):
        try:
            with open(f"{proc_root}/{pid}/net/{name}", encoding="ascii") as fh:
                next(fh, None)
                for line in fh:
                    cols = line.split()
                    if len(cols) > 9 and cols[9] == inode:
                        hex_ip, hex_port = cols[1].split(":")
                        raw = bytes.fromhex(hex_ip)
                        # /proc/net stores each 32-bit word in host (little-endian) order
                        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                        return _socket.inet_ntop(family, raw), int(hex_port, 16)
        except OSError:
            continue
    return None
