"""Member offsets of kernel structs, from the running kernel's own BTF.

The sensor's BPF C takes no kernel-internal layout from headers (a distribution's headers
may be for another kernel). Where reading a kernel-internal field replaces a costly
syscall hook, its byte offset comes from /sys/kernel/btf/vmlinux at load time and is
handed to the compiler as a -D constant.

Written by hand (one linear pass over the type section): no maintained Python library
reads BTF, and BCC exposes no offset lookup.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

from sensor.errors import SensorError

KERNEL_BTF = Path("/sys/kernel/btf/vmlinux")
_MAGIC = 0xEB9F
_KIND_STRUCT, _KIND_UNION = 4, 5
# bytes that follow the 12-byte common header, by kind: fixed, and per vlen entry
_FIXED = {1: 4, 3: 12, 14: 4, 17: 4}          # INT, ARRAY, VAR, DECL_TAG
_PER_ENTRY = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}  # STRUCT, UNION, ENUM, FUNC_PROTO, DATASEC, ENUM64


class BtfError(SensorError):
    """The kernel's BTF is missing, unreadable, or lacks a struct member we need."""


class KernelBtf:
    """Struct and union members of one BTF blob: name -> (type id, byte offset)."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise BtfError("BTF blob too short")
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            "<HBBIIIII", data, 0)
        if magic != _MAGIC:
            raise BtfError(f"not BTF (magic {magic:#x})")
        self._strings = data[hdr_len + str_off: hdr_len + str_off + str_len]
        self._types = data[hdr_len + type_off: hdr_len + type_off + type_len]
        self._structs: dict[int, tuple[int, int, int, int]] = {}  # id -> (name_off, pos, vlen, kflag)
        self._sizes: dict[int, int] = {}         # struct/union id -> byte size
        self._resolve: dict[int, int] = {}       # typedef/modifier id -> target id
        self._index()

    @classmethod
    def from_kernel(cls, path: Path = KERNEL_BTF) -> KernelBtf:
        """The running kernel's BTF."""
        try:
            return cls(path.read_bytes())
        except OSError as exc:
            raise BtfError(f"cannot read {path}: {exc.strerror}") from None

    def _index(self) -> None:
        """One pass: where each struct/union's members are, and what modifiers point to."""
        types, pos, type_id = self._types, 0, 1
        unpack = struct.Struct("<III").unpack_from
        while pos + 12 <= len(types):
            name_off, info, size_or_type = unpack(types, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            pos += 12
            if kind in (_KIND_STRUCT, _KIND_UNION):
                self._structs[type_id] = (name_off, pos, vlen, info >> 31)
                self._sizes[type_id] = size_or_type
            elif kind in (8, 9, 10, 11, 18):  # TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG
                self._resolve[type_id] = size_or_type
            pos += _FIXED.get(kind, 0) + _PER_ENTRY.get(kind, 0) * vlen
            type_id += 1

    def _string_offset(self, name: str) -> int | None:
        """Offset of `name` in the string section (names are NUL-terminated)."""
        needle = name.encode() + b"\0"
        at = self._strings.find(b"\0" + needle)
        return None if at < 0 else at + 1

    def _find(self, struct_id: int, member_off: int) -> int | None:
        """Bit offset of the member named at member_off, looking into anonymous members."""
        entry = self._structs.get(struct_id)
        if entry is None:
            return None
        _name, pos, vlen, kflag = entry
        for i in range(vlen):
            m_name, m_type, m_off = struct.unpack_from("<III", self._types, pos + 12 * i)
            bit_off = m_off & 0xFFFFFF if kflag else m_off
            if m_name == member_off:
                return bit_off
            if m_name == 0:
                while m_type in self._resolve:
                    m_type = self._resolve[m_type]
                inner = self._find(m_type, member_off)
                if inner is not None:
                    return bit_off + inner
        return None

    def _struct_id(self, struct_name: str) -> int:
        """Type id of the (complete) struct or union named struct_name; BtfError when absent."""
        name_off = self._string_offset(struct_name)
        sid = next((i for i, e in self._structs.items() if e[0] == name_off and e[2]), None)
        if sid is None:
            raise BtfError(f"struct {struct_name} is not in the kernel's BTF")
        return sid

    def size(self, struct_name: str) -> int:
        """sizeof(struct or union struct_name); BtfError when absent."""
        return self._sizes[self._struct_id(struct_name)]

    def offset(self, struct_name: str, member: str) -> int:
        """Byte offset of `member` in `struct struct_name`; BtfError when absent."""
        sid, member_off = self._struct_id(struct_name), self._string_offset(member)
        if member_off is None:
            raise BtfError(f"struct {struct_name} has no byte-aligned member {member}")
        bits = self._find(sid, member_off)
        if bits is None or bits % 8:
            raise BtfError(f"struct {struct_name} has no byte-aligned member {member}")
        return bits // 8

    def offsets(self, wanted: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Byte offsets of several (struct, member) pairs."""
        return {(s, m): self.offset(s, m) for s, m in wanted}
