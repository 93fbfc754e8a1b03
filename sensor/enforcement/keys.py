"""Byte layouts of the enforcement maps (mirror of bpf/enforce.h).

A deny entry is (scope, direction, protocol, port, remote CIDR). Scope is a
cgroup id (0 = node), protocol 0 = any, port 0 = any; IPv4 networks are stored
v4-mapped so one trie holds both families.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from sensor.enforcement.errors import InvalidEntryError

DIR_EGRESS = 1
DIR_INGRESS = 2
DIRECTIONS = {"egress": DIR_EGRESS, "ingress": DIR_INGRESS}
DIRECTION_NAMES = {v: k for k, v in DIRECTIONS.items()}

PROTO_ANY = 0
PROTOCOLS = {"any": 0, "tcp": 6, "udp": 17}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}

MODE_AUDIT = 1
MODE_ENFORCE = 2
MODES = {"audit": MODE_AUDIT, "enforce": MODE_ENFORCE}
MODE_NAMES = {v: k for k, v in MODES.items()}

ORIGIN_STATIC = 1
ORIGIN_DETECTION = 2
ORIGIN_MANUAL = 3
ORIGIN_NAMES = {ORIGIN_STATIC: "static", ORIGIN_DETECTION: "detection", ORIGIN_MANUAL: "manual"}

DENY_FIXED_BITS = 96
SAFE_FIXED_BITS = 32

_DENY_KEY = struct.Struct("=IQBB2s16s")   # prefixlen, scope, dir, proto, port(net), addr
_DENY_VAL = struct.Struct("=IBBHQQQ")     # rule_id, mode, origin, reserved, expires, created, hits
_SAFE_KEY = struct.Struct("=I2sH16s")     # prefixlen, port(net), pad, addr
_SCOPE_VAL = struct.Struct("=8I")
_PORT_KEY = struct.Struct("=QBB2sI")     # scope, dir, proto, port(net), pad
_NET_KEY = struct.Struct("=QBBBBI8s")    # scope, dir, family, bits, pad, pad, net (first bytes)
_NET_VAL = struct.Struct("=5I")          # entries per wildcard combination, finer
_ATTACH_REC = struct.Struct("=IIII240s")
RULE_NAME_SIZE = 128

DENY_KEY_SIZE = _DENY_KEY.size
DENY_VAL_SIZE = _DENY_VAL.size
SAFE_KEY_SIZE = _SAFE_KEY.size
SCOPE_VAL_SIZE = _SCOPE_VAL.size
# (key size, value size) of the maps derived from the deny map: a pin with another
# layout is from another netvigil version and is rebuilt rather than reused
INDEX_LAYOUTS = {"scopes": (8, _SCOPE_VAL.size), "ports": (_PORT_KEY.size, 4),
                 "nets": (_NET_KEY.size, _NET_VAL.size)}

META_SOURCE_HASH = 0   # nv_meta: source hash of the loaded programs
META_WIDE = 1          # nv_meta: live wide entries on the node (see DenyKey.net_index_slots)
META_SCOPE_RECORDS = 2  # nv_meta: stamp changed whenever a stored scope record is (see scope_records)

# The net index (nv_nets): coarse nets are IPv4 /16s and IPv6 /32s, fine nets IPv4
# /24s and IPv6 /64s. An entry at least as long as a fine net is counted in its fine
# net (and in its coarse net's `finer`), a shorter one in each coarse net it overlaps;
# one spanning more than 2**NET_SPAN_BITS coarse nets is wide (counted in nv_scopes).
NET_LEVELS = {4: (16, 24), 6: (32, 64)}   # family -> (coarse bits, fine bits)
NET_SPAN_BITS = 8
NET_FINER = 4          # index of `finer` in nv_net_val (after the four combinations)

_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR or a bare address (host route); raises InvalidEntryError."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as exc:
        raise InvalidEntryError(f"bad CIDR {text!r}: {exc}") from None
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.subnet_of(_V4_MAPPED):
        # ::ffff:a.b.c.d/N is an IPv4 network in disguise
        v4 = ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
        return v4
    return net


def mapped(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[bytes, int]:
    """(16 address bytes, prefix bits within the 128-bit address) of a network."""
    if isinstance(net, ipaddress.IPv4Network):
        return b"\x00" * 10 + b"\xff\xff" + net.network_address.packed, 96 + net.prefixlen
    return net.network_address.packed, net.prefixlen


def unmapped(addr16: bytes, bits: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Inverse of mapped()."""
    if addr16[:12] == b"\x00" * 10 + b"\xff\xff" and bits >= 96:
        return ipaddress.IPv4Network((addr16[12:], bits - 96))
    return ipaddress.IPv6Network((addr16, bits))


def address_text(addr16: bytes, family: int) -> str:
    """Text of a 16-byte address as the sensor prints it (IPv4 dotted for family 4)."""
    if family == 4:
        return str(ipaddress.IPv4Address(addr16[12:]))
    return str(ipaddress.IPv6Address(addr16))


def check_port(port: int) -> int:
    """Validate a port (0 = any)."""
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise InvalidEntryError(f"bad port {port!r}: expected 0..65535")
    return port


@dataclass(frozen=True, order=True)
class DenyKey:
    """One deny-map key: who (scope), which way, protocol, port, remote network."""

    scope: int            # cgroup id, 0 = node
    direction: int        # DIR_EGRESS | DIR_INGRESS
    protocol: int         # 0 any, 6 tcp, 17 udp
    port: int             # 0 any
    network: str          # CIDR text, normalised

    @classmethod
    def build(cls, scope: int, direction: int | str, protocol: int | str, port: int,
              cidr: str) -> DenyKey:
        """Validated key from user-level values."""
        if isinstance(direction, str):
            if direction not in DIRECTIONS:
                raise InvalidEntryError(f"bad direction {direction!r}: egress|ingress")
            direction = DIRECTIONS[direction]
        if isinstance(protocol, str):
            if protocol not in PROTOCOLS:
                raise InvalidEntryError(f"bad protocol {protocol!r}: tcp|udp|any")
            protocol = PROTOCOLS[protocol]
        if protocol not in PROTOCOL_NAMES:
            raise InvalidEntryError(f"bad protocol number {protocol}")
        if scope < 0 or scope >= 1 << 64:
            raise InvalidEntryError(f"bad scope cgroup id {scope}")
        return cls(scope, direction, protocol, check_port(port), str(parse_network(cidr)))

    @property
    def combo(self) -> int:
        """Index into nv_scope_val.count (direction block + wildcard combination)."""
        base = 4 if self.direction == DIR_INGRESS else 0
        return base + ((self.protocol == PROTO_ANY) << 1 | (self.port == 0))

    def port_index_key(self) -> bytes | None:
        """nv_ports key of a port-specific entry (None for any-port entries)."""
        if self.port == 0:
            return None
        return _PORT_KEY.pack(self.scope, self.direction, self.protocol,
                              self.port.to_bytes(2, "big"), 0)

    def net_index_slots(self) -> list[tuple[bytes, int]] | None:
        """Where this entry is counted in nv_nets: (key, index into nv_net_val) pairs, the
        fine net before its coarse net's `finer` (the order an insert needs), or None
        when the entry is wide (looked up through nv_scopes instead)."""
        net = parse_network(self.network)
        if isinstance(net, ipaddress.IPv4Network):
            family = 4
        elif _V4_MAPPED.subnet_of(net):
            return None   # an IPv6 network holding every v4-mapped address
        else:
            family = 6
        coarse, fine = NET_LEVELS[family]
        combo = self.combo & 3
        if net.prefixlen >= fine:
            return [(self._net_key(family, net.supernet(new_prefix=fine)), combo),
                    (self._net_key(family, net.supernet(new_prefix=coarse)), NET_FINER)]
        if net.prefixlen >= coarse:
            nets = [net.supernet(new_prefix=coarse)]
        elif coarse - net.prefixlen <= NET_SPAN_BITS:
            nets = list(net.subnets(new_prefix=coarse))
        else:
            return None
        return [(self._net_key(family, n), combo) for n in nets]

    def _net_key(self, family: int, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bytes:
        return _NET_KEY.pack(self.scope, self.direction, family, net.prefixlen, 0, 0,
                             net.network_address.packed[:net.prefixlen // 8].ljust(8, b"\x00"))

    def pack(self) -> bytes:
        """Kernel key bytes."""
        addr, bits = mapped(parse_network(self.network))
        return _DENY_KEY.pack(DENY_FIXED_BITS + bits, self.scope, self.direction, self.protocol,
                              self.port.to_bytes(2, "big"), addr)

    @classmethod
    def unpack(cls, raw: bytes) -> DenyKey:
        """Key from kernel bytes."""
        plen, scope, direction, proto, port, addr = _DENY_KEY.unpack(raw[:_DENY_KEY.size])
        net = unmapped(addr, plen - DENY_FIXED_BITS)
        return cls(scope, direction, proto, int.from_bytes(port, "big"), str(net))

    def describe(self) -> str:
        """Human form, e.g. 'egress tcp 10.0.0.0/8:443'."""
        port = self.port or "*"
        return f"{DIRECTION_NAMES.get(self.direction, '?')} {PROTOCOL_NAMES.get(self.protocol, '?')} {self.network} port {port}"


@dataclass(frozen=True)
class DenyValue:
    """One deny-map value."""

    rule_id: int
    mode: int
    origin: int
    expires_ns: int      # CLOCK_BOOTTIME, 0 = never
    created_ns: int
    hits: int = 0

    def pack(self) -> bytes:
        """Kernel value bytes."""
        return _DENY_VAL.pack(self.rule_id, self.mode, self.origin, 0, self.expires_ns,
                              self.created_ns, self.hits)

    @classmethod
    def unpack(cls, raw: bytes) -> DenyValue:
        """Value from kernel bytes."""
        rid, mode, origin, _, exp, created, hits = _DENY_VAL.unpack(raw[:_DENY_VAL.size])
        return cls(rid, mode, origin, exp, created, hits)


@dataclass(frozen=True, order=True)
class SafeKey:
    """One safety-list key: a network and a port (0 = any)."""

    network: str
    port: int = 0

    @classmethod
    def build(cls, cidr: str, port: int = 0) -> SafeKey:
        """Validated key."""
        return cls(str(parse_network(cidr)), check_port(port))

    def pack(self) -> bytes:
        """Kernel key bytes."""
        addr, bits = mapped(parse_network(self.network))
        return _SAFE_KEY.pack(SAFE_FIXED_BITS + bits, self.port.to_bytes(2, "big"), 0, addr)

    @classmethod
    def unpack(cls, raw: bytes) -> SafeKey:
        """Key from kernel bytes."""
        plen, port, _, addr = _SAFE_KEY.unpack(raw[:_SAFE_KEY.size])
        return cls(str(unmapped(addr, plen - SAFE_FIXED_BITS)), int.from_bytes(port, "big"))


def pack_scope_counts(counts: list[int]) -> bytes:
    """nv_scope_val bytes."""
    return _SCOPE_VAL.pack(*counts)


def unpack_scope_counts(raw: bytes) -> list[int]:
    """nv_scope_val counts."""
    return list(_SCOPE_VAL.unpack(raw[:_SCOPE_VAL.size]))


def pack_net_counts(counts: list[int]) -> bytes:
    """nv_net_val bytes (four combination counts, then finer)."""
    return _NET_VAL.pack(*counts)


def unpack_net_counts(raw: bytes) -> list[int]:
    """nv_net_val counts (four combination counts, then finer)."""
    return list(_NET_VAL.unpack(raw[:_NET_VAL.size]))


def unpack_net_key(raw: bytes) -> tuple[int, int, str]:
    """(scope, direction, network text: a coarse or fine net) of an nv_nets key."""
    scope, direction, family, bits, _, _, net = _NET_KEY.unpack(raw[:_NET_KEY.size])
    if family == 4:
        text = str(ipaddress.IPv4Network((net[:4], bits)))
    else:
        text = str(ipaddress.IPv6Network((net.ljust(16, b"\x00"), bits)))
    return scope, direction, text


def pack_rule_name(name: str) -> bytes:
    """nv_rule_name bytes (UTF-8, truncated to 127 bytes)."""
    data = name.encode("utf-8")[: RULE_NAME_SIZE - 1]
    return data.ljust(RULE_NAME_SIZE, b"\x00")


def unpack_rule_name(raw: bytes) -> str:
    """Rule name from nv_rule_name bytes."""
    return raw.split(b"\x00", 1)[0].decode("utf-8", "replace")


@dataclass(frozen=True)
class AttachRecord:
    """What was attached where (kept in the pinned nv_attach map)."""

    kind: int            # 1 cgroup, 2 tc
    attach_type: int
    prog_id: int
    flags: int
    target: str

    def pack(self) -> bytes:
        """Kernel value bytes."""
        return _ATTACH_REC.pack(self.kind, self.attach_type, self.prog_id, self.flags,
                                self.target.encode()[:239])

    @classmethod
    def unpack(cls, raw: bytes) -> AttachRecord:
        """Record from kernel bytes."""
        kind, at, pid, flags, target = _ATTACH_REC.unpack(raw[:_ATTACH_REC.size])
        return cls(kind, at, pid, flags, target.split(b"\x00", 1)[0].decode())
