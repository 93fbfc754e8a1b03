"""Decoding ring-buffer records (layouts of bpf/sensor.h) into enriched flat events.

The hot path (`decode_at`, network records read in place from the ring buffer): one
`struct.unpack_from` per record, a cached per-process, per-shape template copied and
its variable fields filled in, address text cached by raw bytes (a remote address's
text only while no peer is behind it: `peer_fields`). No BCC reflection and no copy of
the record per event. Each fact is stored once: a connection's ends as
fd.lip/fd.lport and fd.rip/fd.rport; fd.cip, fd.sport, fd.name... are derived where
read (`rules.event.Event`, `rules.fields`).
"""
from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable
from typing import Any

from rules.event import Event
from sensor.bpf_layout import EXEC_EVENT, EXIT_EVENT, FORK_EVENT, KINDS, NET_EVENT, NET_OPS
from sensor.container_identity import HOST, CgroupResolver
from sensor.proc_sockets import socket_local_address
from sensor.procfs import user_name
from sensor.process_table import ProcessRecord, ProcessTable, make_exec_id

# the records of bpf/sensor.h (sensor/bpf_layout.py declares them; a test checks the header)
KIND_OFFSET = NET_EVENT.offsets["h.kind"]
NV_EXEC, NV_FORK, NV_EXIT, NV_NET = (KINDS[k] for k in ("NV_EXEC", "NV_FORK", "NV_EXIT", "NV_NET"))
EXEC_FIXED = EXEC_EVENT.reader(*(m.path for m in EXEC_EVENT.members if m.path != "args"))
FORK = FORK_EVENT.struct
EXIT = EXIT_EVENT.struct
EXEC_ARGS_OFFSET = EXEC_EVENT.offsets["args"]

AF_INET, AF_INET6, AF_PACKET = 2, 10, 17
SOCK_STREAM, SOCK_DGRAM = 1, 2
SOCK_TYPE_NAMES = {1: "SOCK_STREAM", 2: "SOCK_DGRAM", 3: "SOCK_RAW", 10: "SOCK_PACKET"}

OP_NAMES = {op: name for name, op in NET_OPS.items()}
OP_CONNECT, OP_ACCEPT, OP_ACCEPT4, OP_LISTEN, OP_BIND = (
    NET_OPS[n] for n in ("connect", "accept", "accept4", "listen", "bind"))
OP_DUP2, OP_DUP3, OP_SOCKET = NET_OPS["dup2"], NET_OPS["dup3"], NET_OPS["socket"]
SERVER_SIDE_OPS = frozenset({OP_ACCEPT, OP_ACCEPT4, OP_LISTEN, OP_BIND})
OP_SENDTO, OP_SENDMSG = NET_OPS["sendto"], NET_OPS["sendmsg"]
# struct nv_net_event, only the fields the decoder uses (family and type read as one u32)
NET_FAST = NET_EVENT.reader("h.ts_boot_ns", "h.tgid", "h.tid", "ret", "fd", "op", "aux",
                            ("s.family", "I"), "s.lport", "s.rport", "s.laddr", "s.raddr")
"""ts, tgid, tid, ret, fd, op, aux, family | type << 16, lport, rport, laddr, raddr"""
NET_SIZE = NET_EVENT.size
# shapes of network events (how the variable fields are filled in); >= _SERVER: both ends
_SOCKET, _BIND, _LISTEN, _SERVER, _CLIENT, _SEND, _DUP = range(7)
_Template = tuple[dict[str, Any], int, dict[bytes, str], dict[bytes, str], int]
"""(event template, shape, local and remote address text caches, address family) of a
process and shape"""
_COMMON_KEYS = ("evt.num", "evt.time", "evt.type", "evt.dir", "thread.tid", "fd.num", "evt.rawres", "evt.res")
_IP_KEYS = (*_COMMON_KEYS, "fd.type", "fd.typechar", "fd.sockfamily", "fd.l4proto")
_LOCAL_KEYS = (*_IP_KEYS, "fd.lip", "fd.lport", "fd.connected")
_REMOTE_KEYS = (*_IP_KEYS, "fd.lip", "fd.lport", "fd.rip", "fd.rport", "fd.connected")


def errno_name(rawres: int) -> str:
    """Falco's `evt.res`: SUCCESS, or the errno name of a negative result."""
    if rawres >= 0:
        return "SUCCESS"
    return errno.errorcode.get(-rawres, str(rawres))


_RES = {0: "SUCCESS", **{-code: name for code, name in errno.errorcode.items()}}


def _cstr(raw: bytes) -> str:
    end = raw.find(b"\0")
    return (raw if end < 0 else raw[:end]).decode("utf-8", "replace")


class EventDecoder:
    """Turns raw records into events, keeping the process table up to date."""

    def __init__(
        self,
        table: ProcessTable,
        boot_id: str,
        boot_offset_ns: int,
        cgroups: CgroupResolver,
        container_of_pid: Callable[[int], str] | None = None,
        annotate: Callable[[ProcessRecord], None] | None = None,
    ) -> None:
        self.table = table
        self.boot_id = boot_id
        self.boot_offset_ns = boot_offset_ns
        self.cgroups = cgroups
        self._container_of_pid = container_of_pid
        self._annotate = annotate
        """Adds container/pod metadata to a new exec's record (sensor.k8s.enrich)."""
        self._v4_text: dict[bytes, str] = {}
        self._v6_text: dict[bytes, str] = {}
        self._v4_remote: dict[bytes, str] = {}
        self._v6_remote: dict[bytes, str] = {}
        """Remote addresses with no peer behind them (see `peer_fields`)."""
        self._peers: dict[tuple[bytes, int], tuple[str, dict[str, Any]]] = {}
        """(remote address, port) -> (text, peer fields) of remote ends with a peer."""
        self.peer_fields: Callable[[str, int], dict[str, Any] | None] | None = None
        """(fd.rip, fd.rport) -> the fields of the peer behind it, or None (sensor.k8s.enrich).
        Asked only for a remote address in neither remote cache (text of ends without a
        peer; text and fields of ends with one), both kept until
        `forget_remote_addresses()` (the peer index changed)."""
        self._pid_fields: dict[int, dict[str, Any]] = {}
        self._templates: dict[int, dict[int, _Template]] = {}
        self._seq = 0
        self.decode_errors = 0

    # ------------------------------------------------------------------ helpers
    def _addr(self, family: int, raw: bytes) -> str:
        """Text of a 16-byte address field (IPv4 in the first 4 bytes), cached by raw bytes."""
        if family == AF_INET6:
            cache, text = self._v6_text, socket.inet_ntop(socket.AF_INET6, raw)
        else:
            cache, text = self._v4_text, socket.inet_ntop(socket.AF_INET, raw[:4])
        if len(cache) > 65536:
            cache.clear()
        cache[raw] = text
        return text

    def _remote(self, ev: dict[str, Any], family: int, raw: bytes, rport: int) -> str:
        """Text of a remote address not in the remote text cache; adds the peer's fields to
        `ev` when there is a peer behind it (cached by address and port), else caches
        the text."""
        known = self._peers.get((raw, rport))
        if known is not None:
            ev.update(known[1])
            return known[0]
        text = socket.inet_ntop(socket.AF_INET6, raw) if family == AF_INET6 else \
            socket.inet_ntop(socket.AF_INET, raw[:4])
        peer = self.peer_fields(text, rport) if self.peer_fields is not None else None
        if peer is not None:
            ev.update(peer)
            if len(self._peers) > 65536:
                self._peers.clear()
            self._peers[(raw, rport)] = (text, peer)
            return text
        cache = self._v6_remote if family == AF_INET6 else self._v4_remote
        if len(cache) > 65536:
            cache.clear()
        cache[raw] = text
        return text

    def forget_remote_addresses(self) -> None:
        """Ask `peer_fields` again for every remote address (the peer index changed)."""
        self._v4_remote.clear()
        self._v6_remote.clear()
        self._peers.clear()

    def _container(self, cgroup_id: int, pid: int) -> tuple[str, str | None]:
        """(container id, pod uid) of an exec: from its cgroup2 id; from /proc when the id is
        unknown, or names no container on a host with v1 hierarchies too."""
        ident = self.cgroups.identity(cgroup_id)
        if ident is not None and (ident.container_id != HOST or self._container_of_pid is None
                                  or not self.cgroups.hybrid):
            return ident.container_id, ident.pod_uid
        if self._container_of_pid is not None:
            return self._container_of_pid(pid), ident.pod_uid if ident else None
        return HOST, None

    # ------------------------------------------------------------------ decode
    @property
    def events(self) -> int:
        """Events decoded so far (the last `evt.num` handed out)."""
        return self._seq

    def decode(self, raw: bytes) -> Event | None:
        """One event from one ring-buffer record (None for records that are not events)."""
        return self.decode_at(raw, 0, len(raw))

    def decode_at(self, buf: Any, off: int, length: int) -> Event | None:
        """One event from the record buf[off:off + length] (a `RingReader` decode function).

        Network records, the bulk of the stream, are decoded here without a copy of the
        record: a per-process, per-shape template (process fields, constant event fields
        and slots for the rest, in the order of the event) is copied and its variable
        fields filled in. Other kinds go through `_decode_other`.
        """
        try:
            if length < NET_SIZE or buf[off + KIND_OFFSET] != NV_NET:
                return self._decode_other(bytes(buf[off : off + length]))
            ts, tgid, tid, ret, fd, op, aux, famtype, lport, rport, laddr, raddr = NET_FAST.unpack_from(buf, off)
            templates = self._templates.get(tgid)
            entry = None if templates is None else templates.get(op << 32 | famtype)
            if entry is None:
                entry = self._net_template(tgid, op, famtype)
            tmpl, shape, cache, remote, family = entry
            ev = Event(tmpl)
            seq = self._seq + 1
            self._seq = seq
            ev["evt.num"] = seq
            ev["evt.time"] = ts + self.boot_offset_ns
            ev["thread.tid"] = tid
            ev["fd.num"] = fd
            ev["evt.rawres"] = ret
            if ret >= 0:
                ev["evt.res"] = "SUCCESS"
            else:
                res = _RES.get(ret)
                ev["evt.res"] = res if res is not None else errno_name(ret)
            if shape >= _SERVER:  # both ends known: the bulk of the stream
                lip = cache.get(laddr)
                if lip is None:
                    lip = self._addr(family, laddr)
                rip = remote.get(raddr)
                if rip is None:
                    rip = self._remote(ev, family, raddr, rport)
                ev["fd.lip"] = lip
                ev["fd.lport"] = lport
                ev["fd.rip"] = rip
                ev["fd.rport"] = rport
                if shape == _SERVER:  # accept: the remote end is the client
                    return ev
                if shape == _CLIENT:
                    ev["fd.connected"] = ret == 0
                elif shape == _DUP:
                    ev["evt.res"] = "SUCCESS"
                    ev["evt.arg.newfd"] = aux
                return ev
            if shape == _SOCKET:
                return ev
            lip = cache.get(laddr)
            if lip is None:
                lip = self._addr(family, laddr)
            if shape == _LISTEN:
                ev["evt.arg.backlog"] = aux
                if lport == 0 and ret == 0:
                    found = socket_local_address(tgid, fd)
                    if found is not None:
                        lip, lport = found
            ev["fd.lip"] = lip
            ev["fd.lport"] = lport
            return ev
        except (struct.error, ValueError, OSError):
            self.decode_errors += 1
            return None

    def _decode_other(self, raw: bytes) -> Event | None:
        kind = raw[KIND_OFFSET] if len(raw) > KIND_OFFSET else 0
        if kind == NV_EXEC:
            return self._exec(raw)
        if kind == NV_FORK:
            return self._fork(raw)
        if kind == NV_EXIT:
            return self._exit(raw)
        self.decode_errors += 1  # a short network record, or an unknown kind
        return None

    def _net_template(self, tgid: int, op: int, famtype: int) -> _Template:
        """What every network event of this process and shape shares: the event with the
        process fields, the constant event fields and slots (None) for the variable ones,
        in event order; its shape; the address text caches and family. Cached while the
        pid's fields are."""
        pf = self._pid_fields.get(tgid)
        if pf is None:
            pf = self.fields_of_pid(tgid)
        family, stype = famtype & 0xFFFF, famtype >> 16
        v6 = family == AF_INET6
        ev = pf.copy()
        ev.update(dict.fromkeys(_COMMON_KEYS))
        ev["evt.type"] = OP_NAMES.get(op, "unknown")
        ev["evt.dir"] = "<"
        if op == OP_SOCKET:
            shape = _SOCKET
            ev["evt.arg.domain"] = "AF_PACKET" if family == AF_PACKET else str(family)
            ev["evt.arg.type"] = SOCK_TYPE_NAMES.get(stype, str(stype))
            ev["fd.type"] = "packet"
        else:
            ev["fd.type"] = "ipv6" if v6 else "ipv4"
            ev["fd.typechar"] = "6" if v6 else "4"
            ev["fd.sockfamily"] = "ip"
            ev["fd.l4proto"] = "tcp" if stype == SOCK_STREAM else "udp"
            if op == OP_LISTEN or op == OP_BIND:
                shape = _LISTEN if op == OP_LISTEN else _BIND
                ev.update(dict.fromkeys(_LOCAL_KEYS[len(_IP_KEYS):]))
                ev["fd.connected"] = False
                if op == OP_LISTEN:
                    ev["evt.arg.backlog"] = None
            else:
                ev.update(dict.fromkeys(_REMOTE_KEYS[len(_IP_KEYS):]))
                if op == OP_SENDTO or op == OP_SENDMSG:
                    shape = _SEND
                    ev["fd.connected"] = False
                    ev["fd.name_changed"] = True
                elif op == OP_ACCEPT or op == OP_ACCEPT4:
                    shape = _SERVER
                    ev["fd.connected"] = True
                elif op == OP_DUP2 or op == OP_DUP3:
                    shape = _DUP
                    ev["fd.connected"] = True
                    ev["evt.arg.newfd"] = None
                else:
                    shape = _CLIENT
        entry = (ev, shape, self._v6_text if v6 else self._v4_text,
                 self._v6_remote if v6 else self._v4_remote, family)
        if self._pid_fields.get(tgid) is pf:  # a known process: keep it until exec/fork/exit
            self._templates.setdefault(tgid, {})[op << 32 | famtype] = entry
        return entry

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def fields_of_pid(self, tgid: int) -> dict[str, Any]:
        """Process fields of a live pid (cached until its next exec, fork or exit)."""
        record = self.table.by_pid(tgid)
        fields = {"proc.pid": tgid} if record is None else self.table.fields(record.exec_id)
        if record is not None:
            if len(self._pid_fields) > 65536:
                self._pid_fields.clear()
                self._templates.clear()
            self._pid_fields[tgid] = fields
        return fields

    def invalidate_pid(self, tgid: int) -> None:
        """Drop a pid's cached fields and templates (its record's metadata changed)."""
        self._forget_pid(tgid)

    def _forget_pid(self, tgid: int) -> None:
        """Drop a pid's cached fields and templates (its process changed)."""
        self._pid_fields.pop(tgid, None)
        self._templates.pop(tgid, None)

    def _exec(self, raw: bytes) -> Event:
        (ts, cgroup_id, _k, tgid, tid, uid, gid, _pad, comm, _old_pid, path_len, args_len,
         _count, flags, path) = EXEC_FIXED.unpack_from(raw)
        wall = ts + self.boot_offset_ns
        argv_raw = raw[EXEC_ARGS_OFFSET : EXEC_ARGS_OFFSET + args_len]
        argv = [a.decode("utf-8", "replace") for a in argv_raw.split(b"\0")]
        if argv and argv[-1] == "":
            argv.pop()
        exepath = _cstr(path)
        container_id, pod_uid = self._container(cgroup_id, tgid)
        meta: dict[str, Any] = {"user.name": user_name(uid)}
        if pod_uid:
            meta["k8s.pod.uid"] = pod_uid
        if flags & 1:
            meta["proc.args_truncated"] = True
        record = ProcessRecord(
            exec_id=make_exec_id(self.boot_id, tgid, wall),
            pid=tgid,
            ppid=0,
            parent_exec_id=None,
            name=_cstr(comm),
            exe=argv[0] if argv else exepath,
            exepath=exepath,
            args=argv[1:],
            uid=uid,
            gid=gid,
            cgroup_id=cgroup_id,
            container_id=container_id,
            start_ns=wall,
            meta=meta,
        )
        if self._annotate is not None:
            self._annotate(record)
        self.table.exec(record)
        self._forget_pid(tgid)
        ev = Event(self.table.fields(record.exec_id))
        ev.update({"evt.num": self._next_seq(), "evt.time": wall, "evt.type": "execve", "evt.dir": "<",
                   "evt.res": "SUCCESS", "evt.rawres": 0, "thread.tid": tid})
        return ev

    def _fork(self, raw: bytes) -> Event:
        ts, _cg, _k, tgid, tid, *_rest, child = FORK.unpack_from(raw)[:-1]
        wall = ts + self.boot_offset_ns
        self.table.fork(tgid, child, wall, make_exec_id(self.boot_id, child, wall))
        self._forget_pid(child)
        ev = Event(self.fields_of_pid(tgid))
        ev.update({"evt.num": self._next_seq(), "evt.time": wall, "evt.type": "clone", "evt.dir": "<",
                   "evt.res": "SUCCESS", "evt.rawres": child, "thread.tid": tid})
        return ev

    def _exit(self, raw: bytes) -> Event:
        ts, _cg, _k, tgid, tid, *_rest, code, _pad = EXIT.unpack_from(raw)
        wall = ts + self.boot_offset_ns
        record = self.table.by_pid(tgid)
        ev = Event(self.table.fields(record.exec_id) if record else {"proc.pid": tgid})
        if record is not None:
            self.table.exit(tgid, wall, code)
        self._forget_pid(tgid)
        status = code & 0xFF if code >= 0 else -1
        ev.update({"evt.num": self._next_seq(), "evt.time": wall, "evt.type": "procexit", "evt.dir": "<",
                   "evt.res": "SUCCESS", "evt.rawres": 0, "thread.tid": tid,
                   "evt.arg.status": status, "evt.arg.sig": 0})
        return ev
