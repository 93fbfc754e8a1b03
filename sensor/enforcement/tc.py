"""tc over netlink (pyroute2): the clsact qdisc and cls_bpf filters of one interface.

Generic primitives only; which filters are netvigil's is decided by the datapath. Every
netlink failure becomes an `AttachError` naming the interface.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sensor.enforcement.errors import AttachError, InterfaceNotFoundError

TC_H_CLSACT = 0xFFFFFFF1          # the clsact (and ingress) qdisc's parent
CLSACT_HANDLE = 0xFFFF0000
PARENTS = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}   # TC_H_CLSACT major | TC_H_MIN_*
_ETH_P_ALL = 0x0003
_TCA_BPF_ID = 11                  # the attached program's id; pyroute2 leaves it undecoded
_TCA_BPF_FLAG_ACT_DIRECT = 1


@dataclass(frozen=True)
class TcFilter:
    """One classifier on a clsact hook."""

    prio: int
    handle: int
    kind: str        # "bpf", "u32", ...
    name: str        # TCA_BPF_NAME ("" for other kinds)
    prog_id: int     # the eBPF program's id (0 for classic BPF and other kinds)


@contextmanager
def _link(dev: str, action: str) -> Iterator[tuple[Any, int]]:
    """(IPRoute, ifindex) of `dev`; netlink errors become AttachError naming `dev`."""
    from pyroute2 import IPRoute  # noqa: PLC0415 (import on use: 0.1 s)
    from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415

    try:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=dev)
            if not found:
                raise InterfaceNotFoundError(f"cannot {action}: no interface {dev!r}")
            yield ipr, found[0]
    except NetlinkError as exc:
        raise AttachError(f"cannot {action} on {dev}: {os.strerror(exc.code)}") from None


def _prog_id(options: Any) -> int:
    for slot in options["attrs"]:
        nla = slot.nla
        if slot.name == "UNKNOWN" and nla["header"]["type"] == _TCA_BPF_ID and nla.length >= 8:
            return int(struct.unpack_from("=I", nla.data, nla.offset + 4)[0])
    return 0


def filters(dev: str, direction: str) -> list[TcFilter]:
    """The classifiers on `dev`'s clsact `direction` hook ([] when it has no clsact)."""
    out = []
    with _link(dev, f"list tc {direction} filters") as (ipr, index):
        if _clsact_kind(ipr, index) != "clsact":
            return []
        for msg in ipr.get_filters(index=index, parent=PARENTS[direction]):
            options = msg.get_attr("TCA_OPTIONS")
            if msg["handle"] == 0 or options is None:
                continue  # the per-priority header of a dump, not a filter
            kind = msg.get_attr("TCA_KIND") or ""
            out.append(TcFilter(prio=msg["info"] >> 16, handle=msg["handle"], kind=kind,
                                name=(options.get_attr("TCA_BPF_NAME") or "") if kind == "bpf" else "",
                                prog_id=_prog_id(options) if kind == "bpf" else 0))
    return out


def _clsact_kind(ipr: Any, index: int) -> str | None:
    """Kind of the qdisc in the clsact slot ("clsact", "ingress"), None when empty."""
    for q in ipr.get_qdiscs(index=index):
        if q["parent"] == TC_H_CLSACT:
            return q.get_attr("TCA_KIND")
    return None


def ensure_clsact(dev: str) -> bool:
    """Add a clsact qdisc to `dev` unless it has one; True when this call added it."""
    from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415

    with _link(dev, "add a clsact qdisc") as (ipr, index):
        kind = _clsact_kind(ipr, index)
        if kind == "clsact":
            return False
        if kind is not None:
            raise AttachError(f"cannot add a clsact qdisc on {dev}: it has a {kind} qdisc "
                              f"(the enforcement classifiers need clsact)")
        try:
            ipr.tc("add", "clsact", index)
        except NetlinkError:
            if _clsact_kind(ipr, index) == "clsact":
                return False  # another tool added one meanwhile
            raise
        return True


def replace_filter(dev: str, direction: str, prio: int, handle: int, prog_fd: int, name: str) -> None:
    """Attach an eBPF classifier (direct-action, all protocols) at (prio, handle)."""
    with _link(dev, f"attach {name} to tc {direction}") as (ipr, index):
        ipr.tc("replace-filter", "bpf", index, handle=handle, parent=PARENTS[direction], prio=prio,
               protocol=_ETH_P_ALL, fd=prog_fd, name=name, flags=_TCA_BPF_FLAG_ACT_DIRECT)


def delete_filter(dev: str, direction: str, prio: int, handle: int) -> None:
    """Remove the classifier at (prio, handle); nothing else on the hook is touched."""
    with _link(dev, f"remove the tc {direction} filter {prio}/{handle:#x}") as (ipr, index):
        ipr.tc("del-filter", "bpf", index, handle=handle, parent=PARENTS[direction], prio=prio,
               protocol=_ETH_P_ALL)


def delete_clsact_if_unused(dev: str) -> bool:
    """Remove `dev`'s clsact qdisc if no filter is left on either hook; True when removed."""
    if filters(dev, "ingress") or filters(dev, "egress"):
        return False
    with _link(dev, "remove the clsact qdisc") as (ipr, index):
        if _clsact_kind(ipr, index) != "clsact":
            return False
        ipr.tc("del", "clsact", index)
    return True
