"""Deny/safety key encoding: the byte layout the BPF programs look up."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensor.enforcement.errors import InvalidEntryError
from sensor.enforcement.keys import (
    DIR_EGRESS, DIR_INGRESS, DenyKey, DenyValue, SafeKey, parse_network, unpack_net_key,
)


def test_ipv4_key_is_v4_mapped_with_fixed_fields_in_prefix() -> None:
    raw = DenyKey.build(1234, "egress", "tcp", 443, "10.1.2.0/24").pack()
    assert len(raw) == 32
    prefixlen, scope, direction, proto = struct.unpack_from("=IQBB", raw)
    assert prefixlen == 96 + 96 + 24
    assert (scope, direction, proto) == (1234, DIR_EGRESS, 6)
    assert raw[14:16] == (443).to_bytes(2, "big")          # network byte order
    assert raw[16:] == bytes(10) + b"\xff\xff" + bytes([10, 1, 2, 0])


def test_ipv6_and_any_address() -> None:
    k = DenyKey.build(0, "ingress", "any", 0, "::/0")
    raw = k.pack()
    assert struct.unpack_from("=I", raw)[0] == 96
    assert DenyKey.unpack(raw) == k
    assert k.direction == DIR_INGRESS and k.combo == 4 + 3


def test_host_address_and_mapped_text_normalise_to_ipv4() -> None:
    assert DenyKey.build(1, "egress", "tcp", 0, "10.0.0.1").network == "10.0.0.1/32"
    assert str(parse_network("::ffff:10.0.0.0/104")) == "10.0.0.0/8"
    assert DenyKey.build(1, "egress", "udp", 0, "10.0.0.9/8").network == "10.0.0.0/8"


@pytest.mark.parametrize("kwargs, msg", [
    ({"cidr": "10.0.0.0/33"}, "bad CIDR"),
    ({"cidr": "example.com"}, "bad CIDR"),
    ({"port": 70000}, "bad port"),
    ({"protocol": "icmp"}, "bad protocol"),
    ({"direction": "sideways"}, "bad direction"),
])
def test_invalid_keys_are_rejected_with_a_clear_message(kwargs: dict, msg: str) -> None:
    args = {"scope": 1, "direction": "egress", "protocol": "tcp", "port": 80, "cidr": "10.0.0.1"}
    args.update(kwargs)
    with pytest.raises(InvalidEntryError, match=msg):
        DenyKey.build(args["scope"], args["direction"], args["protocol"], args["port"], args["cidr"])


def test_wildcard_combination_index() -> None:
    assert DenyKey.build(1, "egress", "tcp", 80, "::/0").combo == 0
    assert DenyKey.build(1, "egress", "tcp", 0, "::/0").combo == 1
    assert DenyKey.build(1, "egress", "any", 80, "::/0").combo == 2
    assert DenyKey.build(1, "egress", "any", 0, "::/0").combo == 3


@given(scope=st.integers(0, 2**64 - 1), port=st.integers(0, 65535),
       proto=st.sampled_from(["tcp", "udp", "any"]), v4=st.booleans(),
       addr=st.integers(0, 2**128 - 1), plen=st.integers(0, 128))
def test_roundtrip(scope: int, port: int, proto: str, v4: bool, addr: int, plen: int) -> None:
    import ipaddress

    if v4:
        net = ipaddress.IPv4Network((addr & 0xFFFFFFFF, plen % 33), strict=False)
    else:
        net = ipaddress.IPv6Network((addr, plen), strict=False)
    k = DenyKey.build(scope, "egress", proto, port, str(net))
    assert DenyKey.unpack(k.pack()) == k


def test_value_and_safe_key_layouts() -> None:
    v = DenyValue(7, 2, 1, 123, 45, 6)
    assert len(v.pack()) == 32 and DenyValue.unpack(v.pack()) == v
    s = SafeKey.build("10.96.0.1", 443)
    raw = s.pack()
    assert len(raw) == 24 and struct.unpack_from("=I", raw)[0] == 32 + 128
    assert SafeKey.unpack(raw) == s
    assert struct.unpack_from("=I", SafeKey.build("::/0", 22).pack())[0] == 32


FINER = 4   # the nv_net_val field counting a coarse net's entries kept in its fine nets


@pytest.mark.parametrize("cidr,slots", [
    ("1.2.3.4/32", [("1.2.3.0/24", 0), ("1.2.0.0/16", FINER)]),
    ("10.1.2.0/24", [("10.1.2.0/24", 0), ("10.1.0.0/16", FINER)]),
    ("10.1.2.0/23", [("10.1.0.0/16", 0)]),   # shorter than a fine net: coarse only
    ("10.1.0.0/16", [("10.1.0.0/16", 0)]),
    ("10.16.0.0/12", [(f"10.{b}.0.0/16", 0) for b in range(16, 32)]),
    ("2001:db8::/48", [("2001:db8::/32", 0)]),
    ("2001:db8:1:2::/64", [("2001:db8:1:2::/64", 0), ("2001:db8::/32", FINER)]),
    ("2001:db8:0:1::5/128", [("2001:db8:0:1::/64", 0), ("2001:db8::/32", FINER)]),
    ("2001:db0::/28", [(f"2001:db{h:x}::/32", 0) for h in range(16)]),
    ("::/96", [("::/64", 0), ("::/32", FINER)]),   # IPv4-compatible range, not v4-mapped
    ("0.0.0.0/7", None),              # wider than 256 coarse nets
    ("2001::/16", None),
    ("::/64", None),                  # holds ::ffff:0:0/96, so every IPv4 address
])
def test_net_index_slots_cover_the_network_or_mark_it_wide(
        cidr: str, slots: list[tuple[str, int]] | None) -> None:
    key = DenyKey.build(7, "ingress", "udp", 53, cidr)
    got = key.net_index_slots()
    if slots is None:
        assert got is None
        return
    assert got is not None
    assert [(unpack_net_key(raw), field) for raw, field in got] == [
        ((7, DIR_INGRESS, n), field) for n, field in slots]


def test_net_index_slot_field_is_the_wildcard_combination() -> None:
    got = DenyKey.build(7, "egress", "any", 0, "10.1.2.3").net_index_slots()
    assert got is not None and [field for _, field in got] == [3, FINER]
    got = DenyKey.build(7, "egress", "tcp", 0, "10.1.0.0/16").net_index_slots()
    assert got is not None and [field for _, field in got] == [1]
