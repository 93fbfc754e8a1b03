"""The net index (nv_nets) and wide entries against the real kernel: whatever prefix
lengths and coarse nets a scope's entries have, the datapath still finds each one, and
entries removed from the map stop being looked up.

Runs as root, with the fixtures of test_enforcement (own cgroups, netns, pins).
"""
from __future__ import annotations

import errno
from collections.abc import Iterator

import pytest

from sensor import cgroups
from sensor.enforcement.datapath import META_SOURCE_HASH, EnforcementDatapath
from sensor.enforcement.keys import DenyKey, DenyValue, MODE_ENFORCE, ORIGIN_MANUAL
from sensor.enforcement.maps import EnforcementMaps
from enforcement_fixtures import (  # noqa: F401 (fixtures)
    NS_IP, NS_IP_OTHER, SUBNET, TCP_CLIENT, TCP_PORT, TCP_PORT2, CgroupTree, cg_tree, datapath,
    run_in, test_net,
)

EPERM = f"ERR {errno.EPERM}"
OK = "OK hi"


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
    assert maps.net_counts()[(a, 1, "10.231.0.0/16")] == [1, 0, 1, 0]
    assert maps.wide_entries() == 0

    maps.remove(subnet)
    assert _reach(cg_tree) == (EPERM, OK, OK, OK)
    assert maps.net_counts()[(a, 1, "10.231.0.0/16")] == [1, 0, 0, 0]
    maps.remove(host)
    assert _reach(cg_tree) == (OK, OK, OK, OK)
    assert set(maps.net_counts()) == {(a, 1, "192.0.0.0/16")}

    # a /8 spans 256 coarse nets, every one indexed; removing it leaves none behind
    eight = _put(maps, DenyKey.build(a, "egress", "tcp", 0, "10.0.0.0/8"))
    assert _reach(cg_tree) == (EPERM, EPERM, EPERM, EPERM)
    assert sum(net.startswith("10.") for _, _, net in maps.net_counts()) == 256
    maps.remove(eight)
    assert _reach(cg_tree) == (OK, OK, OK, OK)
    assert set(maps.net_counts()) == {(a, 1, "192.0.0.0/16")}


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
