"""The net index (nv_nets) and wide entries against the real kernel: whatever prefix
lengths, coarse and fine nets a scope's entries have, the datapath still finds each one,
entries next to the destination (same coarse net, other fine net) do not match, and
entries removed from the map stop being looked up.

Runs as root, with the fixtures of test_enforcement (own cgroups, netns, pins).
"""
from __future__ import annotations

import errno
import os
from collections.abc import Iterator

import pytest

from sensor import cgroups
from sensor.enforcement import bpfsys
from sensor.enforcement.datapath import META_SOURCE_HASH, EnforcementDatapath
from sensor.enforcement.errors import EnforcementError
from sensor.enforcement.keys import DenyKey, DenyValue, MODE_ENFORCE, ORIGIN_MANUAL
from sensor.enforcement.maps import EnforcementMaps
from enforcement_fixtures import (  # noqa: F401 (fixtures)
    NS_IP, NS_IP_OTHER, SUBNET, TCP_CLIENT, TCP_PORT, TCP_PORT2, CgroupTree, cg_tree, datapath,
    run_in, test_net,
)

EPERM = f"ERR {errno.EPERM}"
REFUSED = f"ERR {errno.ECONNREFUSED}"   # allowed through, nothing listening
OK = "OK hi"
FINE = f"10.231.{SUBNET}.0/24"          # the fine net of NS_IP and NS_IP_OTHER
NEAR = f"10.231.{SUBNET ^ 1}"           # another /24 of the same /16


@pytest.fixture
def maps(datapath: EnforcementDatapath) -> Iterator[EnforcementMaps]:
    m = datapath.maps
    assert m is not None
    m.flush()
    try:
        yield m
    finally:
        m.flush()


def _put(maps: EnforcementMaps, key: DenyKey) -> DenyKey:
    maps.put(key, DenyValue(maps.rule_id("net index test"), MODE_ENFORCE, ORIGIN_MANUAL, 0, 0))
    return key


def _reach(cg: CgroupTree) -> tuple[str, str, str, str]:
    """From cgroup a: (NS_IP, NS_IP_OTHER) x (TCP_PORT, TCP_PORT2)."""
    return (run_in(cg.a, TCP_CLIENT, NS_IP, TCP_PORT), run_in(cg.a, TCP_CLIENT, NS_IP, TCP_PORT2),
            run_in(cg.a, TCP_CLIENT, NS_IP_OTHER, TCP_PORT),
            run_in(cg.a, TCP_CLIENT, NS_IP_OTHER, TCP_PORT2))


def test_every_prefix_length_of_one_scope_matches_and_removed_entries_stop(
        maps: EnforcementMaps, cg_tree: CgroupTree) -> None:  # noqa: F811
    a = cg_tree.a_id
    host = _put(maps, DenyKey.build(a, "egress", "tcp", TCP_PORT, f"{NS_IP}/32"))
    subnet = _put(maps, DenyKey.build(a, "egress", "any", TCP_PORT2, f"10.231.{SUBNET}.0/24"))
    # an entry of the same scope in another coarse net, which the index keeps apart
    _put(maps, DenyKey.build(a, "egress", "any", 0, "192.0.2.0/24"))
    assert _reach(cg_tree) == (EPERM, EPERM, OK, EPERM)
    # both sit in their fine net, which the coarse net points to
    assert maps.net_counts()[(a, 1, "10.231.0.0/16")] == [0, 0, 0, 0, 2]
    assert maps.net_counts()[(a, 1, FINE)] == [1, 0, 1, 0, 0]
    assert maps.wide_entries() == 0

    maps.remove(subnet)
    assert _reach(cg_tree) == (EPERM, OK, OK, OK)
    assert maps.net_counts()[(a, 1, "10.231.0.0/16")] == [0, 0, 0, 0, 1]
    assert maps.net_counts()[(a, 1, FINE)] == [1, 0, 0, 0, 0]
    maps.remove(host)
    assert _reach(cg_tree) == (OK, OK, OK, OK)
    assert set(maps.net_counts()) == {(a, 1, "192.0.0.0/16"), (a, 1, "192.0.2.0/24")}

    # a /8 spans 256 coarse nets, every one indexed; removing it leaves none behind
    eight = _put(maps, DenyKey.build(a, "egress", "tcp", 0, "10.0.0.0/8"))
    assert _reach(cg_tree) == (EPERM, EPERM, EPERM, EPERM)
    assert sum(net.startswith("10.") for _, _, net in maps.net_counts()) == 256
    maps.remove(eight)
    assert _reach(cg_tree) == (OK, OK, OK, OK)
    assert set(maps.net_counts()) == {(a, 1, "192.0.0.0/16"), (a, 1, "192.0.2.0/24")}


def test_near_entries_do_not_match_and_long_and_short_ones_share_a_coarse_net(
        maps: EnforcementMaps, cg_tree: CgroupTree) -> None:  # noqa: F811
    a, parent = cg_tree.a_id, cgroups.cgroup_id(cg_tree.parent)
    # entries in the destination's /16 but another /24, in both scopes, every combination
    near = [_put(maps, DenyKey.build(scope, "egress", proto, port, cidr))
            for scope in (a, parent) for proto in ("tcp", "any") for port in (0, TCP_PORT)
            for cidr in (f"{NEAR}.2/32", f"{NEAR}.0/24")]
    assert _reach(cg_tree) == (OK, OK, OK, OK)
    assert maps.net_counts()[(a, 1, "10.231.0.0/16")] == [0, 0, 0, 0, 8]
    assert (a, 1, FINE) not in maps.net_counts()

    # a /32 and a /24 in the destination's own /24 both match, next to the near ones
    host = _put(maps, DenyKey.build(a, "egress", "tcp", 0, f"{NS_IP_OTHER}/32"))
    subnet = _put(maps, DenyKey.build(parent, "egress", "any", TCP_PORT2, FINE))
    assert _reach(cg_tree) == (OK, EPERM, EPERM, EPERM)
    assert maps.net_counts()[(a, 1, FINE)] == [0, 1, 0, 0, 0]
    assert maps.net_counts()[(parent, 1, FINE)] == [0, 0, 1, 0, 0]

    # a short entry (/8 to /23) counts in the coarse net itself, beside the fine ones
    short = _put(maps, DenyKey.build(a, "egress", "tcp", TCP_PORT, f"10.231.{SUBNET}.0/23"))
    assert _reach(cg_tree) == (EPERM, EPERM, EPERM, EPERM)
    assert maps.net_counts()[(a, 1, "10.231.0.0/16")] == [1, 0, 0, 0, 9]

    maps.remove(host)
    maps.remove(subnet)
    assert _reach(cg_tree) == (EPERM, OK, EPERM, OK)
    assert (a, 1, FINE) not in maps.net_counts() and (parent, 1, FINE) not in maps.net_counts()
    for key in near:
        maps.remove(key)
    assert _reach(cg_tree) == (EPERM, OK, EPERM, OK)
    assert maps.net_counts() == {(a, 1, "10.231.0.0/16"): [1, 0, 0, 0, 0]}
    maps.remove(short)
    assert maps.net_counts() == {}
    assert _reach(cg_tree) == (OK, OK, OK, OK)

    # the index the manager rebuilds from the entries is the one the writes kept
    for key in near[:4] + [host, short]:
        _put(maps, key)
    kept = maps.net_counts()
    maps.rebuild_scopes()
    assert maps.net_counts() == kept


def test_ipv6_fine_nets_are_slash_64(maps: EnforcementMaps, cg_tree: CgroupTree) -> None:
    """::1 on loopback, nothing listening: allowed is ECONNREFUSED, denied EPERM."""
    a = cg_tree.a_id
    _put(maps, DenyKey.build(a, "egress", "tcp", 0, "0:0:0:1::1/128"))   # ::/32, another /64
    _put(maps, DenyKey.build(a, "egress", "any", 0, "::2/128"))          # ::1's own /64
    assert run_in(cg_tree.a, TCP_CLIENT, "::1", TCP_PORT) == REFUSED
    assert maps.net_counts()[(a, 1, "::/32")] == [0, 0, 0, 0, 2]
    assert maps.net_counts()[(a, 1, "::/64")] == [0, 0, 0, 1, 0]
    _put(maps, DenyKey.build(a, "egress", "tcp", TCP_PORT, "::1/128"))
    assert run_in(cg_tree.a, TCP_CLIENT, "::1", TCP_PORT) == EPERM
    assert run_in(cg_tree.a, TCP_CLIENT, "::1", TCP_PORT2) == REFUSED


def test_wide_entries_match_through_the_scope_index(maps: EnforcementMaps,
                                                    cg_tree: CgroupTree) -> None:
    a, parent = cg_tree.a_id, cgroups.cgroup_id(cg_tree.parent)
    _put(maps, DenyKey.build(a, "egress", "tcp", 0, f"{NS_IP}/32"))
    everything = _put(maps, DenyKey.build(parent, "egress", "tcp", TCP_PORT2, "0.0.0.0/0"))
    assert maps.wide_entries() == 1 and set(maps.scope_counts()) == {parent}
    assert _reach(cg_tree) == (EPERM, EPERM, OK, EPERM)
    assert run_in(cg_tree.b, TCP_CLIENT, NS_IP_OTHER, TCP_PORT2) == EPERM
    maps.remove(everything)
    assert maps.wide_entries() == 0 and maps.scope_counts() == {}
    assert _reach(cg_tree) == (EPERM, EPERM, OK, OK)
    # an IPv6 network holding the v4-mapped range covers IPv4 destinations too
    _put(maps, DenyKey.build(a, "egress", "any", TCP_PORT2, "::/64"))
    assert maps.wide_entries() == 1
    assert _reach(cg_tree) == (EPERM, EPERM, OK, EPERM)
    maps.flush()
    assert maps.wide_entries() == 0 and maps.net_counts() == {} and maps.scope_counts() == {}
    assert _reach(cg_tree) == (OK, OK, OK, OK)


def test_changed_programs_rebuild_an_index_left_empty(
        maps: EnforcementMaps, datapath: EnforcementDatapath, cg_tree: CgroupTree,
        test_net) -> None:  # noqa: F811
    """Pins from a netvigil without the net index: entries exist, nv_nets is empty."""
    _put(maps, DenyKey.build(cg_tree.a_id, "egress", "tcp", TCP_PORT, f"{NS_IP}/32"))
    for raw in list(maps.nets.keys()):
        maps.nets.delete(raw)
    assert run_in(cg_tree.a, TCP_CLIENT, NS_IP, TCP_PORT) == OK   # what such pins would do
    maps.meta_set(META_SOURCE_HASH, 1)   # as if the BPF source changed since pinning
    datapath.install(cg_tree.parent, [test_net.host_if])
    assert run_in(cg_tree.a, TCP_CLIENT, NS_IP, TCP_PORT) == EPERM


def test_an_index_pinned_with_another_layout_is_replaced_and_rebuilt(
        datapath: EnforcementDatapath, cg_tree: CgroupTree, test_net) -> None:  # noqa: F811
    """An upgrade over pins whose nv_nets has an older layout: the CLI refuses them with a
    clear error, the agent's load replaces that index and fills it from the deny map."""
    maps = datapath.maps
    assert maps is not None
    layout = datapath.layout
    try:
        _put(maps, DenyKey.build(cg_tree.a_id, "egress", "tcp", TCP_PORT, f"{NS_IP}/32"))
        maps.meta_set(META_SOURCE_HASH, 1)   # as if the BPF source changed since pinning
        datapath.close()
        path = layout.map_path("nets")
        os.unlink(path)
        bpfsys.PinnedMap.open_or_create(path, bpfsys.BPF_MAP_TYPE_HASH, 16, 16, 1024,
                                        name="nv_nets").close()
        with pytest.raises(EnforcementError, match="nets index .* another layout"):
            EnforcementMaps(layout)
        datapath.install(cg_tree.parent, [test_net.host_if])
        assert datapath.maps is not None and datapath.maps.nets.key_size == 24
        assert run_in(cg_tree.a, TCP_CLIENT, NS_IP, TCP_PORT) == EPERM
        assert run_in(cg_tree.a, TCP_CLIENT, NS_IP, TCP_PORT2) == OK
    finally:
        if datapath.maps is not None:
            datapath.maps.flush()
