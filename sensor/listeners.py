"""TCP listeners that were open before the agent, for the cgroup hook set's accepts.

That hook set learns who owns a port at `listen()` (bpf/sensor_net_cgroup.c, map
`listeners`, keyed by network namespace inode and port), so a server that listened
before the agent started (an agent restarted under running servers, as a DaemonSet
upgrade does) would have its accepts go unreported. At start the agent finds those
listeners in /proc and seeds the map with them.

Written here rather than with psutil: `psutil.net_connections()` reads only the caller's
own network namespace (/proc/net/tcp), and pods each have their own.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from sensor.bpf_layout import KINDS, LISTEN_KEY, LISTENER
from sensor.process_table import ProcessRecord

log = logging.getLogger(__name__)

TCP_LISTEN = "0A"
"""The `st` column of /proc/net/tcp for a socket in LISTEN."""


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket and the process that owns it."""

    netns: int      # inode of the network namespace (/proc/PID/ns/net)
    port: int
    inode: int      # the socket's inode (socket:[N] in /proc/PID/fd)
    pid: int
    fd: int


def listening_inodes(table_text: str) -> dict[int, int]:
    """Socket inode -> local port of the LISTEN rows of a /proc/net/tcp or tcp6 table."""
    out: dict[int, int] = {}
    for line in table_text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 10 or cols[3] != TCP_LISTEN:
            continue
        try:
            port = int(cols[1].rsplit(":", 1)[1], 16)
            inode = int(cols[9])
        except (IndexError, ValueError):
            continue
        if inode:
            out[inode] = port
    return out


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def _socket_fds(fd_dir: str) -> Iterable[tuple[int, int]]:
    """(fd, socket inode) of a process's open sockets, lowest fd first."""
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return
    for name in sorted(names, key=lambda n: int(n) if n.isdigit() else -1):
        try:
            link = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if link.startswith("socket:[") and name.isdigit():
            yield int(name), int(link[8:-1])


def listening_sockets(proc_root: str = "/proc") -> list[Listener]:
    """Every listening TCP socket on the node, one per (network namespace, port).

    Each namespace's tables are read once, through the first process found in it. A
    socket shared by several processes (a pre-fork server's master and workers) belongs
    to the lowest pid: the master, which is the process that called `listen()`.
    """
    pids = sorted(int(name) for name in os.listdir(proc_root) if name.isdigit())
    tables: dict[int, dict[int, int]] = {}
    found: dict[tuple[int, int], Listener] = {}
    for pid in pids:
        base = f"{proc_root}/{pid}"
        try:
            netns = os.stat(f"{base}/ns/net").st_ino
        except OSError:
            continue   # gone, or a process we may not look into
        if netns not in tables:
            tables[netns] = {**listening_inodes(_read(f"{base}/net/tcp")),
                             **listening_inodes(_read(f"{base}/net/tcp6"))}
        ports = tables[netns]
        if not ports:
            continue
        for fd, inode in _socket_fds(f"{base}/fd"):
            port = ports.get(inode)
            if port is not None:
                found.setdefault((netns, port), Listener(netns, port, inode, pid, fd))
    return list(found.values())


class ListenerMap(Protocol):
    """What seeding needs of the BPF map (a BCC table)."""

    Key: Any
    Leaf: Any

    def __contains__(self, key: Any) -> bool: ...
    def __setitem__(self, key: Any, leaf: Any) -> None: ...


def seed(table: ListenerMap, listeners: Iterable[Listener],
         record_of: Callable[[int], ProcessRecord | None], now_ns: int = 0) -> int:
    """Add each listener whose (namespace, port) the map does not hold yet, owned by the
    process `record_of(pid)` describes; returns how many were added. A listener the
    programs saw themselves (a `listen()` since they were attached) is kept as it is."""
    added = 0
    for item in listeners:
        record = record_of(item.pid)
        if record is None:
            continue
        key = table.Key.from_buffer_copy(LISTEN_KEY.struct.pack(item.netns, item.port, 0))
        if key in table:
            continue
        comm = record.name.encode("utf-8", "replace")[:15]
        leaf = table.Leaf.from_buffer_copy(LISTENER.struct.pack(
            now_ns, record.cgroup_id, KINDS["NV_NET"], item.pid, item.pid, record.uid, record.gid, 0,
            comm, item.fd, 0, item.inode))
        table[key] = leaf
        added += 1
    log.debug("seeded %d listeners that predate the agent", added)
    return added
