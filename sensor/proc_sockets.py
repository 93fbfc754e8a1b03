"""Sockets found in /proc, for what the BPF programs cannot see themselves.

- Listeners open before the agent: that hook set learns who owns a port at `listen()`
  (bpf/sensor_net_cgroup.c, map `listeners`, keyed by network namespace inode and port),
  so a server that listened before the agent started (an agent restarted under running
  servers, as a DaemonSet upgrade does) would have its accepts go unreported. At start
  the agent finds those listeners here and seeds the map with them.
- AF_PACKET sockets on a kernel that refuses fentry: no cgroup hook or non-syscall
  tracepoint sees a packet socket being made, so `PacketSocketScanner` reads every
  network namespace's packet socket table periodically and reports each new one for the
  process that holds it.
- A socket's local address (`socket_local_address`), for a listen() whose port the
  kernel picked (the decoder's slow path).

Written here rather than with psutil: `psutil.net_connections()` reads only the caller's
own network namespace (/proc/net/tcp), and pods each have their own.
"""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from sensor.bpf_layout import KINDS, LISTEN_KEY, LISTENER, NET_EVENT, NET_OPS
from sensor.process_table import ProcessRecord

log = logging.getLogger(__name__)

AF_PACKET = 17
TCP_LISTEN = "0A"
"""The `st` column of /proc/net/tcp for a socket in LISTEN."""
SCAN_INTERVAL_S = 1.0
"""How often `PacketSocketScanner` looks for new AF_PACKET sockets."""


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket and the process that owns it."""

    netns: int      # inode of the network namespace (/proc/PID/ns/net)
    port: int
    inode: int      # the socket's inode (socket:[N] in /proc/PID/fd)
    pid: int
    fd: int


def socket_inode(link: str) -> int | None:
    """N of an fd link `socket:[N]` (/proc/PID/fd), None for anything else."""
    return int(link[8:-1]) if link.startswith("socket:[") and link[8:-1].isdigit() else None


def _tcp_rows(table_text: str) -> Iterator[list[str]]:
    """The columns of each row of a /proc/net/tcp or tcp6 table (header skipped)."""
    for line in table_text.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 10:
            yield cols


def listening_inodes(table_text: str) -> dict[int, int]:
    """Socket inode -> local port of the LISTEN rows of a /proc/net/tcp or tcp6 table."""
    out: dict[int, int] = {}
    for cols in _tcp_rows(table_text):
        if cols[3] != TCP_LISTEN:
            continue
        try:
            port = int(cols[1].rsplit(":", 1)[1], 16)
            inode = int(cols[9])
        except (IndexError, ValueError):
            continue
        if inode:
            out[inode] = port
    return out


def socket_local_address(pid: int, fd: int, proc_root: str = "/proc") -> tuple[str, int] | None:
    """Local (ip, port) of a process's TCP socket, read from /proc/PID/net (slow path only)."""
    try:
        inode = socket_inode(os.readlink(f"{proc_root}/{pid}/fd/{fd}"))
    except OSError:
        return None
    if inode is None:
        return None
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for cols in _tcp_rows(_read(f"{proc_root}/{pid}/net/{name}")):
            if cols[9] == str(inode):
                hex_ip, hex_port = cols[1].split(":")
                raw = bytes.fromhex(hex_ip)
                # /proc/net stores each 32-bit word in host (little-endian) order
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                return socket.inet_ntop(family, raw), int(hex_port, 16)
    return None


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
            inode = socket_inode(os.readlink(f"{fd_dir}/{name}"))
        except OSError:
            continue
        if inode is not None and name.isdigit():
            yield int(name), inode


def processes_by_netns(proc_root: str = "/proc", known: dict[int, int] | None = None) -> dict[int, list[int]]:
    """Network namespace inode -> its processes' pids, lowest first (a process that is
    gone, or that we may not look into, is left out). With `known` (pid -> namespace,
    updated in place), only processes not in it are looked up."""
    out: dict[int, list[int]] = {}
    cache = known if known is not None else {}
    alive = sorted(int(name) for name in os.listdir(proc_root) if name.isdigit())
    if known is not None:
        for gone in set(known) - set(alive):
            del known[gone]
    for pid in alive:
        netns = cache.get(pid)
        if netns is None:
            try:
                netns = cache[pid] = os.stat(f"{proc_root}/{pid}/ns/net").st_ino
            except OSError:
                continue
        out.setdefault(netns, []).append(pid)
    return out


def _namespace_table(proc_root: str, pids: list[int], names: tuple[str, ...],
                     parse: Callable[[str], dict[int, int]]) -> dict[int, int]:
    """A namespace's /proc/PID/net/<name> tables, parsed, read through its first live pid."""
    for pid in pids:
        texts = [_read(f"{proc_root}/{pid}/net/{name}") for name in names]
        if any(texts):
            out: dict[int, int] = {}
            for text in texts:
                out.update(parse(text))
            return out
    return {}


def _owners(proc_root: str, pids: list[int], wanted: dict[int, int]) -> Iterable[tuple[int, int, int, int]]:
    """(pid, fd, inode, value) for each socket inode of `wanted` (inode -> value), held by
    the lowest pid that has it open."""
    left = dict(wanted)
    for pid in pids:
        if not left:
            return
        for fd, inode in _socket_fds(f"{proc_root}/{pid}/fd"):
            value = left.pop(inode, None)
            if value is not None:
                yield pid, fd, inode, value


def listening_sockets(proc_root: str = "/proc") -> list[Listener]:
    """Every listening TCP socket on the node, one per (network namespace, port).

    Each namespace's tables are read once, through the first process found in it. A
    socket shared by several processes (a pre-fork server's master and workers) belongs
    to the lowest pid: the master, which is the process that called `listen()`.
    """
    found: dict[tuple[int, int], Listener] = {}
    for netns, pids in processes_by_netns(proc_root).items():
        ports = _namespace_table(proc_root, pids, ("tcp", "tcp6"), listening_inodes)
        for pid, fd, inode, port in _owners(proc_root, pids, ports):
            found.setdefault((netns, port), Listener(netns, port, inode, pid, fd))
    return list(found.values())


def packet_inodes(table_text: str) -> dict[int, int]:
    """Socket inode -> socket type (SOCK_RAW 3, SOCK_DGRAM 2) of a /proc/net/packet table."""
    out: dict[int, int] = {}
    for line in table_text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 9:
            continue
        try:
            out[int(cols[8])] = int(cols[2])
        except ValueError:
            continue
    return out


@dataclass(frozen=True)
class PacketSocket:
    """An AF_PACKET socket and the process that holds it."""

    pid: int
    fd: int
    inode: int
    type: int


class PacketSocketScanner:
    """New AF_PACKET sockets since the last `scan()`, in every network namespace.

    The first scan learns what is open already (as the programs report only sockets made
    after they were attached) and reports nothing; each later one reports the sockets
    that appeared since, for the lowest pid holding each. A socket opened and closed
    between two scans is not seen.
    """

    REFRESH_SCANS = 10
    """Every this many scans each process's namespace is looked up again (in between,
    only new processes': a process that moves to another namespace is seen late)."""

    def __init__(self, proc_root: str = "/proc") -> None:
        self.proc_root = proc_root
        self._seen: set[int] | None = None
        self._netns_of: dict[int, int] = {}
        self._scans = 0

    def scan(self) -> list[PacketSocket]:
        """The packet sockets that appeared since the previous scan."""
        self._scans += 1
        if self._scans % self.REFRESH_SCANS == 0:
            self._netns_of.clear()
        spaces = processes_by_netns(self.proc_root, self._netns_of)
        tables = {netns: _namespace_table(self.proc_root, pids, ("packet",), packet_inodes)
                  for netns, pids in spaces.items()}
        now_open = {inode for table in tables.values() for inode in table}
        seen, self._seen = self._seen, now_open
        if seen is None:
            return []
        found: list[PacketSocket] = []
        for netns, table in tables.items():
            new = {inode: kind for inode, kind in table.items() if inode not in seen}
            if new:
                found += [PacketSocket(pid, fd, inode, kind)
                          for pid, fd, inode, kind in _owners(self.proc_root, spaces[netns], new)]
        return found


class ListenerMap(Protocol):
    """What seeding needs of the BPF map (a BCC table)."""

    Key: Any
    Leaf: Any

    def __contains__(self, key: Any) -> bool: ...
    def __setitem__(self, key: Any, leaf: Any) -> None: ...


def _header(pid: int, record: ProcessRecord, now_ns: int) -> tuple[Any, ...]:
    """The members of an nv_header (bpf_layout.HEADER) for process `pid`, as the programs
    fill it (fill_header), from what the process table knows of it."""
    comm = record.name.encode("utf-8", "replace")[:15]
    return now_ns, record.cgroup_id, KINDS["NV_NET"], pid, pid, record.uid, record.gid, 0, comm


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
        leaf = table.Leaf.from_buffer_copy(LISTENER.struct.pack(
            *_header(item.pid, record, now_ns), item.fd, 0, item.inode))
        table[key] = leaf
        added += 1
    log.debug("seeded %d listeners that predate the agent", added)
    return added


def packet_socket_record(sock: PacketSocket, record: ProcessRecord, now_ns: int) -> bytes:
    """The nv_net_event the programs emit for an AF_PACKET `socket()` (as sensor_sockets.c
    does), for a socket the scanner found: it goes through the same decoder."""
    return NET_EVENT.struct.pack(
        *_header(sock.pid, record, now_ns), sock.fd, sock.fd, NET_OPS["socket"], (AF_PACKET << 16) | sock.type,
        now_ns, AF_PACKET, sock.type, 0, 0, bytes(16), bytes(16))
