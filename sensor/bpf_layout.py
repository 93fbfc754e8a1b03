"""The BPF record layouts of bpf/sensor.h, declared once on the Python side.

Each record is a list of its C members (with their paths, ``h.tgid``, ``s.lport``) and
`struct` codes, in order; offsets and sizes follow (the header pads explicitly, so the
little-endian packing without alignment is the C layout). The decoder builds its
readers from these declarations, and `check_against_header` has BCC's clang check every
offset, size and constant against the header itself (tests/test_decoding.py runs it).
"""
from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path


@dataclass(frozen=True)
class Member:
    """One C member of a record: its path in the struct and its `struct` code."""

    path: str
    code: str

    @property
    def size(self) -> int:
        return struct.calcsize("<" + self.code)


@dataclass(frozen=True)
class RecordLayout:
    """A record struct of bpf/sensor.h: C name and members in order."""

    c_name: str
    members: tuple[Member, ...]

    @cached_property
    def offsets(self) -> dict[str, int]:
        """Member path -> byte offset."""
        out, off = {}, 0
        for m in self.members:
            out[m.path] = off
            off += m.size
        return out

    @cached_property
    def size(self) -> int:
        """sizeof(struct c_name)."""
        return sum(m.size for m in self.members)

    @cached_property
    def struct(self) -> struct.Struct:
        """Every member, in order."""
        return struct.Struct("<" + "".join(m.code for m in self.members))

    def reader(self, *wanted: str | tuple[str, str]) -> struct.Struct:
        """A Struct that unpacks only ``wanted`` members (in record order), skipping the
        rest. A ``(path, code)`` pair reads a wider value starting at that member (e.g.
        two adjacent u16 as one u32); it must end where a member ends."""
        codes = dict(w if isinstance(w, tuple) else (w, "") for w in wanted)
        by_path = {m.path: m for m in self.members}
        ends = {self.offsets[m.path] + m.size for m in self.members}
        picks = sorted(((self.offsets[p], p) for p in codes), key=lambda x: x[0])
        fmt, pos = "<", 0
        for off, path in picks:
            if off < pos:
                raise ValueError(f"{self.c_name}: {path} overlaps the member before it")
            code = codes[path] or by_path[path].code
            if off > pos:
                fmt += f"{off - pos}x"
            fmt += code
            pos = off + struct.calcsize("<" + code)
            if pos not in ends:
                raise ValueError(f"{self.c_name}: {path} read as {code} ends inside a member")
        return struct.Struct(fmt)


def _m(spec: str) -> tuple[Member, ...]:
    """Members from "path:code path:code ..."."""
    return tuple(Member(*item.split(":")) for item in spec.split())


COMM_LEN, PATH_LEN, ARG_LEN, ARGS_SIZE, MAX_ARGS = 16, 256, 256, 1024, 20

HEADER = _m("ts_boot_ns:Q cgroup_id:Q kind:I tgid:I tid:I uid:I gid:I pad:I comm:16s")
"""struct nv_header, first in every record (56 bytes)."""
_H = tuple(Member("h." + m.path, m.code) for m in HEADER)

NET_EVENT = RecordLayout("nv_net_event", _H + _m(
    "ret:i fd:i op:I aux:I s.gen:Q s.family:H s.type:H s.lport:H s.rport:H "
    "s.laddr:16s s.raddr:16s"))
EXEC_EVENT = RecordLayout("nv_exec_event", _H + _m(
    f"old_pid:I path_len:H args_len:H args_count:I flags:I path:{PATH_LEN}s "
    f"args:{ARGS_SIZE + ARG_LEN}s"))
FORK_EVENT = RecordLayout("nv_fork_event", _H + _m("child_pid:I pad:I"))
EXIT_EVENT = RecordLayout("nv_exit_event", _H + _m("code:i pad:I"))
LISTEN_KEY = RecordLayout("nv_listen_key", _m("netns:I port:H pad:H"))
"""Key of the cgroup hook set's `listeners` map (the agent seeds it: sensor/proc_sockets.py)."""
LISTENER = RecordLayout("nv_listener", _H + _m("fd:i pad:I ino:Q"))
"""Value of the `listeners` map: who listens, on which fd, the socket's inode."""
LAYOUTS: tuple[RecordLayout, ...] = (NET_EVENT, EXEC_EVENT, FORK_EVENT, EXIT_EVENT, LISTEN_KEY, LISTENER)

#: enum nv_kind
KINDS = {"NV_EXEC": 1, "NV_FORK": 2, "NV_EXIT": 3, "NV_NET": 4}
#: enum nv_net_op, by the evt.type each becomes
NET_OPS = {"connect": 1, "accept": 2, "accept4": 3, "listen": 4, "bind": 5, "sendto": 6,
           "sendmsg": 7, "dup2": 8, "dup3": 9, "socket": 10, "connect_result": 11}
_OP_CONSTANTS = {"NV_OP_" + name.upper(): value for name, value in NET_OPS.items()}
#: #defines of sizes
SIZES = {"NV_COMM_LEN": COMM_LEN, "NV_PATH_LEN": PATH_LEN, "NV_ARG_LEN": ARG_LEN,
         "NV_ARGS_SIZE": ARGS_SIZE, "NV_MAX_ARGS": MAX_ARGS}


def layout_assertions() -> str:
    """C text: one `_Static_assert` per offset, size and constant declared here."""
    lines = []
    for lay in LAYOUTS:
        t = f"struct {lay.c_name}"
        for m in lay.members:
            where = f"{lay.c_name}.{m.path}: offset {lay.offsets[m.path]}, size {m.size}"
            lines.append(f"_Static_assert(__builtin_offsetof({t}, {m.path}) == {lay.offsets[m.path]}"
                         f" && sizeof((({t} *)0)->{m.path}) == {m.size}, \"NVLAYOUT {where}\");")
        lines.append(f"_Static_assert(sizeof({t}) == {lay.size}, "
                     f"\"NVLAYOUT sizeof({lay.c_name}) == {lay.size}\");")
    for name, value in {**KINDS, **_OP_CONSTANTS, **SIZES}.items():
        lines.append(f"_Static_assert({name} == {value}, \"NVLAYOUT {name} == {value}\");")
    return "\n".join(lines) + "\n"


_CHECK = """
import sys
from bcc import BPF
BPF(text=sys.stdin.read().encode(), cflags=["-I" + sys.argv[1], "-Wno-macro-redefined"])
"""
_FAILED = re.compile(r'"NVLAYOUT ([^"]*)"')


def check_against_header(header_dir: Path) -> list[str]:
    """What of the declarations disagrees with ``header_dir``/sensor.h, compiled by BCC's
    clang ([] when all agree). Each item names the struct member or constant, with the
    offset and size Python expects; a header that does not compile is one item."""
    text = '#include "sensor.h"\n' + layout_assertions()
    proc = subprocess.run([sys.executable, "-c", _CHECK, str(header_dir.resolve())], input=text,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode == 0:
        return []
    failed = [f"python expects {m}" for m in _FAILED.findall(proc.stderr)
              if "static assert" in proc.stderr or "static_assert" in proc.stderr]
    if failed:
        return list(dict.fromkeys(failed))
    return [f"{header_dir / 'sensor.h'} does not compile: {proc.stderr.strip()[-2000:]}"]
