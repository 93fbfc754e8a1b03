"""The enforcement maps in memory, with the kernel's lookup (bpf/enforce.c) in Python.

The replay preview runs the real EnforcementManager over these, so an entry is
installed, merged, capped and refused (safety list) exactly as on a live node, and a
recorded connection is matched the way `nv_match_current` matches it: node scope, then
the cgroup ancestry shallow to deep, each scope trying its (protocol, port) wildcard
combinations with a longest-prefix match on the address; an enforce match ends the
search, a deeper audit match replaces a shallower one; expired entries are ignored.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from sensor.enforcement.keys import (MODE_ENFORCE, PROTO_ANY, DenyKey, DenyValue, SafeKey,
                                     mapped, parse_network)

_Bucket = tuple[int, int, int, int]   # scope, direction, protocol, port


def _address_bits(address: str) -> int | None:
    """The 128-bit v4-mapped form of an address, as the kernel keys it."""
    try:
        addr = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv4Address):
        return int.from_bytes(b"\x00" * 10 + b"\xff\xff" + addr.packed, "big")
    return int(addr)


class _NoKernelMap:
    """Stands in for the pinned deny map where the manager reads hit counters."""

    @staticmethod
    def lookup(_raw: bytes) -> None:
        return None


class MemoryMaps:
    """The EnforcementMaps surface the manager uses, held in dictionaries."""

    def __init__(self) -> None:
        self.deny = _NoKernelMap()
        self.safe: frozenset[SafeKey] = frozenset()
        self._entries: dict[DenyKey, DenyValue] = {}
        self._buckets: dict[_Bucket, dict[DenyKey, tuple[int, int]]] = {}
        self._names: dict[int, str] = {}
        self._ids: dict[str, int] = {}

    # -- the surface EnforcementManager writes through ------------------------------
    def rule_id(self, name: str) -> int:
        """A stable id per rule name."""
        rid = self._ids.get(name)
        if rid is None:
            rid = self._ids[name] = len(self._ids) + 1
            self._names[rid] = name
        return rid

    def rule_names(self) -> dict[int, str]:
        """id -> rule name."""
        return dict(self._names)

    def put(self, key: DenyKey, val: DenyValue) -> bool:
        """Write an entry; True when the key is new."""
        new = key not in self._entries
        self._entries[key] = val
        addr, bits = mapped(parse_network(key.network))
        bucket = (key.scope, key.direction, key.protocol, key.port)
        self._buckets.setdefault(bucket, {})[key] = (int.from_bytes(addr, "big"), bits)
        return new

    def remove(self, key: DenyKey) -> None:
        """Delete an entry (absent keys are fine)."""
        if self._entries.pop(key, None) is not None:
            self._buckets[(key.scope, key.direction, key.protocol, key.port)].pop(key, None)

    def entries(self) -> dict[DenyKey, DenyValue]:
        """Every entry."""
        return dict(self._entries)

    def set_safety(self, keys: Iterable[SafeKey]) -> None:
        """The safety list as installed."""
        self.safe = frozenset(keys)

    def rebuild_scopes(self, _keys: Any = None) -> None:
        """Nothing to rebuild: lookups read the buckets directly."""

    def counters(self) -> dict[str, int]:
        """No kernel counters here."""
        return {}

    # -- the kernel's lookup ------------------------------------------------------
    def _longest(self, bucket: _Bucket, addr: int) -> DenyKey | None:
        best, best_bits = None, -1
        for key, (net, bits) in self._buckets.get(bucket, {}).items():
            if bits > best_bits and (bits == 0 or (net ^ addr) >> (128 - bits) == 0):
                best, best_bits = key, bits
        return best

    def match(self, chain: Sequence[int], direction: int, protocol: int, port: int,
              address: str, now: int) -> tuple[DenyKey, DenyValue] | None:
        """The entry the datapath would act on for a connection of a process whose cgroup
        chain (node 0 first, then shallow to deep) is `chain`, or None."""
        addr = _address_bits(address)
        if addr is None:
            return None
        found: tuple[DenyKey, DenyValue, int] | None = None
        for scope in chain:
            for combo in range(4):
                proto = PROTO_ANY if combo & 2 else protocol
                p = 0 if combo & 1 else port
                key = self._longest((scope, direction, proto, p), addr)
                if key is None:
                    continue
                val = self._entries[key]
                if val.expires_ns and val.expires_ns <= now:
                    continue
                if found is None or val.mode == MODE_ENFORCE or found[2] != scope:
                    found = (key, val, scope)
                if found[1].mode == MODE_ENFORCE:
                    return found[0], found[1]
        return (found[0], found[1]) if found else None
