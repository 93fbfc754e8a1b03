"""Thin ctypes wrappers over the bpf(2) commands enforcement needs.

Used for everything that must work without compiling BPF C: opening pinned
maps and programs, map element access, pinning, cgroup attach/detach/query,
and object info. (BCC compiles only when programs must be loaded.)
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import resource
import struct
from collections.abc import Iterator

from sensor.enforcement.errors import BPFSyscallError

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "arm64": 280}.get(platform.machine(), 321)
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long

BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
BPF_LINK_CREATE = 28

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

BPF_F_ALLOW_MULTI = 1 << 1
BPF_F_NO_PREALLOC = 1

BPF_MAP_TYPE_HASH = 1

_ATTR_SIZE = 128

# bpf_attach_type values used here
CGROUP_INET4_BIND = 8
CGROUP_INET6_BIND = 9
CGROUP_INET4_CONNECT = 10
CGROUP_INET6_CONNECT = 11
CGROUP_INET4_POST_BIND = 12
CGROUP_INET6_POST_BIND = 13
CGROUP_UDP4_SENDMSG = 14
CGROUP_UDP6_SENDMSG = 15


def _call(cmd: int, attr: ctypes.Array, what: str) -> int:
    ret = _libc.syscall(_SYS_BPF, cmd, ctypes.byref(attr), _ATTR_SIZE)
    if ret < 0:
        raise BPFSyscallError(what, ctypes.get_errno())
    return int(ret)


def _attr(fmt: str, *values: object) -> ctypes.Array:
    buf = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into(fmt, buf, 0, *values)
    return buf


def obj_get(path: str) -> int:
    """Open a pinned object; returns a new fd (caller closes)."""
    p = ctypes.create_string_buffer(os.fsencode(path))
    return _call(BPF_OBJ_GET, _attr("=QII", ctypes.addressof(p), 0, 0), f"open pinned {path}")


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int,
               flags: int = 0, name: str = "") -> int:
    """Create a map; returns its fd (caller closes). On EPERM (kernels that charge maps to
    RLIMIT_MEMLOCK) the limit is raised once and the call retried, as libbpf does."""
    attr = _attr("=IIIIIII16s", map_type, key_size, value_size, max_entries, flags, 0, 0,
                 name.encode()[:15])
    try:
        return _call(BPF_MAP_CREATE, attr, f"create map {name}")
    except BPFSyscallError as exc:
        if exc.errno != 1:
            raise
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        return _call(BPF_MAP_CREATE, attr, f"create map {name}")


def obj_pin(fd: int, path: str) -> None:
    """Pin an object fd at `path` in bpffs."""
    p = ctypes.create_string_buffer(os.fsencode(path))
    _call(BPF_OBJ_PIN, _attr("=QII", ctypes.addressof(p), fd, 0), f"pin {path}")


def prog_get_fd_by_id(prog_id: int) -> int:
    """Open a loaded program by id; returns a new fd."""
    return _call(BPF_PROG_GET_FD_BY_ID, _attr("=III", prog_id, 0, 0), f"open prog id {prog_id}")


def _info(fd: int, size: int) -> bytes:
    info = ctypes.create_string_buffer(size)
    _call(BPF_OBJ_GET_INFO_BY_FD, _attr("=IIQ", fd, size, ctypes.addressof(info)), "object info")
    return info.raw


def prog_id(fd: int) -> int:
    """Kernel id of the program behind `fd`."""
    return struct.unpack_from("=I", _info(fd, 256), 4)[0]


def prog_name(fd: int) -> str:
    """Name of the program behind `fd` (the first 15 bytes of its function name)."""
    return _info(fd, 256)[64:80].split(b"\x00", 1)[0].decode("utf-8", "replace")


def map_info(fd: int) -> dict[str, int]:
    """type, id, key_size, value_size, max_entries, map_flags of a map fd."""
    raw = _info(fd, 96)
    t, i, ks, vs, me, fl = struct.unpack_from("=IIIIII", raw, 0)
    return {"type": t, "id": i, "key_size": ks, "value_size": vs, "max_entries": me, "map_flags": fl}


def prog_attach(prog_fd: int, target_fd: int, attach_type: int, flags: int = BPF_F_ALLOW_MULTI) -> None:
    """Attach a program to a cgroup (legacy attach: owned by the cgroup, survives the process)."""
    _call(BPF_PROG_ATTACH, _attr("=IIIII", target_fd, prog_fd, attach_type, flags, 0),
          f"attach program (type {attach_type})")


def link_create(prog_fd: int, target_fd: int, attach_type: int) -> int:
    """Attach a program to a cgroup through a BPF link (multi-attach, beside legacy
    BPF_F_ALLOW_MULTI attachments); returns the link fd: closing it detaches, so the
    attachment never outlives the process."""
    return _call(BPF_LINK_CREATE, _attr("=IIII", prog_fd, target_fd, attach_type, 0),
                 f"link program to cgroup (type {attach_type})")


def prog_detach(prog_fd: int, target_fd: int, attach_type: int) -> None:
    """Detach one program from a cgroup."""
    _call(BPF_PROG_DETACH, _attr("=IIIII", target_fd, prog_fd, attach_type, 0, 0),
          f"detach program (type {attach_type})")


def prog_query(target_fd: int, attach_type: int, max_progs: int = 64) -> list[int]:
    """Ids of the programs attached directly to a cgroup for `attach_type`."""
    ids = (ctypes.c_uint32 * max_progs)()
    attr = _attr("=IIIIQI", target_fd, attach_type, 0, 0, ctypes.addressof(ids), max_progs)
    _call(BPF_PROG_QUERY, attr, f"query cgroup programs (type {attach_type})")
    count = struct.unpack_from("=I", attr, 24)[0]
    return [int(ids[i]) for i in range(min(count, max_progs))]


class PinnedMap:
    """A BPF map opened by fd with raw byte keys and values."""

    def __init__(self, fd: int, key_size: int, value_size: int, name: str = "") -> None:
        self.fd = fd
        self.key_size = key_size
        self.value_size = value_size
        self.name = name

    @classmethod
    def open(cls, path: str, value_size: int | None = None) -> PinnedMap:
        """Open a pinned map; `value_size` overrides the kernel's (per-CPU maps)."""
        fd = obj_get(path)
        info = map_info(fd)
        return cls(fd, info["key_size"], value_size or info["value_size"], path)

    @classmethod
    def open_or_create(cls, path: str, map_type: int, key_size: int, value_size: int,
                       max_entries: int, flags: int = 0, name: str = "") -> PinnedMap:
        """Open the map pinned at `path`, creating and pinning it first when absent (a
        concurrent creator's pin wins: its map is opened)."""
        try:
            return cls.open(path)
        except BPFSyscallError as exc:
            if exc.errno != 2:
                raise
        fd = map_create(map_type, key_size, value_size, max_entries, flags, name)
        try:
            obj_pin(fd, path)
        except BPFSyscallError as exc:
            os.close(fd)
            if exc.errno != 17:
                raise
            return cls.open(path)
        return cls(fd, key_size, value_size, path)

    def close(self) -> None:
        """Close the fd (the pinned map stays)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def lookup(self, key: bytes) -> bytes | None:
        """Value for `key`, or None when absent."""
        k = ctypes.create_string_buffer(key, self.key_size)
        v = ctypes.create_string_buffer(self.value_size)
        attr = _attr("=IIQQQ", self.fd, 0, ctypes.addressof(k), ctypes.addressof(v), 0)
        try:
            _call(BPF_MAP_LOOKUP_ELEM, attr, f"lookup in {self.name}")
        except BPFSyscallError as exc:
            if exc.errno == 2:
                return None
            raise
        return v.raw

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        """Insert or replace `key`."""
        k = ctypes.create_string_buffer(key, self.key_size)
        v = ctypes.create_string_buffer(value, self.value_size)
        attr = _attr("=IIQQQ", self.fd, 0, ctypes.addressof(k), ctypes.addressof(v), flags)
        _call(BPF_MAP_UPDATE_ELEM, attr, f"update {self.name}")

    def delete(self, key: bytes) -> bool:
        """Delete `key`; False if it was absent."""
        k = ctypes.create_string_buffer(key, self.key_size)
        attr = _attr("=IIQ", self.fd, 0, ctypes.addressof(k))
        try:
            _call(BPF_MAP_DELETE_ELEM, attr, f"delete from {self.name}")
        except BPFSyscallError as exc:
            if exc.errno == 2:
                return False
            raise
        return True

    def keys(self) -> Iterator[bytes]:
        """Every key (snapshot-free iteration: concurrent changes may be seen or not)."""
        cur: ctypes.Array | None = None
        nxt = ctypes.create_string_buffer(self.key_size)
        while True:
            attr = _attr("=IIQQ", self.fd, 0, ctypes.addressof(cur) if cur is not None else 0,
                         ctypes.addressof(nxt))
            try:
                _call(BPF_MAP_GET_NEXT_KEY, attr, f"iterate {self.name}")
            except BPFSyscallError as exc:
                if exc.errno == 2:
                    return
                raise
            key = nxt.raw
            yield key
            cur = ctypes.create_string_buffer(key, self.key_size)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs; keys deleted during iteration are skipped."""
        for key in list(self.keys()):
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def __enter__(self) -> PinnedMap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def possible_cpus() -> int:
    """Number of possible CPUs (size of per-CPU map values)."""
    with open("/sys/devices/system/cpu/possible", encoding="ascii") as fh:
        text = fh.read().strip()
    total = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        total += (int(hi) if hi else int(lo)) - int(lo) + 1
    return total
