"""Decode verdict records (struct nv_verdict) into flat `netvigil_verdict` events."""
from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable, Mapping

from rules.event import Event
from sensor.boottime import boot_to_wall_offset_ns
from sensor.enforcement.keys import PROTOCOL_NAMES, address_text

VERDICT_NAMES = {1: "deny", 2: "audit"}
HOOK_NAMES = {
    1: "connect4", 2: "connect6", 3: "sendmsg4", 4: "sendmsg6", 5: "bind4", 6: "bind6",
    7: "tc_ingress", 8: "tc_egress",
}
_EVT_TYPE_OF_HOOK = {1: "connect", 2: "connect", 3: "sendmsg", 4: "sendmsg", 5: "bind",
                     6: "bind", 7: "packet", 8: "packet"}

_VERDICT = struct.Struct("=QQQQIBBBBHHI16s16s16s")
VERDICT_SIZE = _VERDICT.size  # 96


def decode_verdict(raw: bytes, rule_name: Callable[[int], str], epoch_offset: int) -> Event:
    """The flat event (contract field names) of one verdict record."""
    (ts, pid_tgid, cgid, scope, rule_id, verdict, hook, family, proto, rport, lport, ifindex,
     raddr, laddr, comm) = _VERDICT.unpack(raw[:VERDICT_SIZE])
    fam = 4 if family == 4 else 6
    rip = address_text(raddr, fam)
    lip = address_text(laddr, fam) if any(laddr[12:] if fam == 4 else laddr) else ""
    bind = hook in (5, 6)
    ev = Event({
        "evt.type": "netvigil_verdict",
        "evt.dir": "<",
        "evt.time": ts + epoch_offset,
        "evt.res": "EPERM" if verdict == 1 and hook <= 6 else "SUCCESS",
        "evt.rawres": -1 if verdict == 1 and hook <= 6 else 0,
        "netvigil.verdict": VERDICT_NAMES.get(verdict, str(verdict)),
        "netvigil.rule": rule_name(rule_id),
        "netvigil.hook": HOOK_NAMES.get(hook, str(hook)),
        "netvigil.op": _EVT_TYPE_OF_HOOK.get(hook, "unknown"),
        "netvigil.scope_cgroup_id": scope,
        "fd.type": f"ipv{fam}",
        "fd.typechar": str(fam),
        "fd.sockfamily": "ip",
        "fd.l4proto": PROTOCOL_NAMES.get(proto, str(proto)),
        "proc.cgroup_id": cgid,
    })
    # the ends as the sensor's events store them; fd.sip, fd.cport, fd.name... derive
    # from them (rules.fields: a bind knows only its local end, which is the server)
    if bind:
        ev.update({"fd.lip": lip, "fd.lport": lport})
    else:
        ev.update({"fd.rip": rip, "fd.rport": rport})
        if lip:
            ev["fd.lip"] = lip
        if lport:
            ev["fd.lport"] = lport
        ev["fd.connected"] = hook in (1, 2, 7, 8)
    if pid_tgid:
        ev["proc.pid"] = pid_tgid >> 32
        ev["thread.tid"] = pid_tgid & 0xFFFFFFFF
        name = comm.split(b"\x00", 1)[0].decode("utf-8", "replace")
        if name:
            ev["proc.name"] = name
    if ifindex:
        ev["netvigil.ifindex"] = ifindex
    return ev


def verdict_callback(sink: Callable[[dict], None], rule_name: Callable[[int], str]) -> Callable:
    """A BCC ring-buffer callback that decodes records and hands events to `sink`."""
    offset = boot_to_wall_offset_ns()

    def _cb(_ctx: object, data: int, size: int) -> int:
        raw = ctypes.string_at(data, min(size, VERDICT_SIZE))
        sink(decode_verdict(raw, rule_name, offset))
        return 0

    return _cb


def is_verdict(event: Mapping) -> bool:
    """True for events produced by this module."""
    return event.get("evt.type") == "netvigil_verdict"
