"""The `enforce:` configuration section and verdict decoding."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from sensor.enforcement.config import parse_enforce_config
from sensor.enforcement.errors import ConfigError
from sensor.enforcement.keys import SafeKey
from sensor.enforcement.verdicts import VERDICT_SIZE, decode_verdict


def test_defaults() -> None:
    cfg = parse_enforce_config(None, "netvigil.yaml")
    assert cfg.pin_path == Path("/sys/fs/bpf/netvigil") and cfg.mode is None and cfg.persist


def test_full_section() -> None:
    cfg = parse_enforce_config({
        "pin_path": "/sys/fs/bpf/nv2", "cgroup": "/kubepods.slice", "interfaces": ["eth0"],
        "mode": "audit", "sweep_interval": 0.5,
        "safety": {"dns": False, "extra": ["10.0.0.0/8", "port 22", {"cidr": "fd00::/8", "port": 53}]},
    }, "netvigil.yaml")
    assert cfg.interfaces == ("eth0",) and cfg.mode == "audit" and not cfg.dns
    assert set(cfg.safety_extra) == {SafeKey.build("10.0.0.0/8"), SafeKey.build("::/0", 22),
                                     SafeKey.build("fd00::/8", 53)}
    assert SafeKey.build("::/0", 22) in cfg.safety_list().entries


@pytest.mark.parametrize("data, msg", [
    ({"mode": "block"}, "mode"),
    ({"colour": 1}, "unknown key"),
    ({"interfaces": "eth0"}, "interfaces"),
    ({"safety": {"extra": ["300.1.1.1"]}}, "bad safety entry"),
    ({"sweep_interval": 0}, "sweep_interval"),
    ({"persist": "yes"}, "persist"),
])
def test_errors_name_the_file(data: dict, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg) as exc:
        parse_enforce_config(data, "/etc/netvigil/netvigil.yaml")
    assert "/etc/netvigil/netvigil.yaml" in str(exc.value)


def _record(**kw) -> bytes:
    f = dict(ts=1000, pid_tgid=(42 << 32) | 43, cg=77, scope=70, rule=3, verdict=1, hook=1, family=4,
             proto=6, rport=443, lport=0, ifindex=0,
             raddr=bytes(10) + b"\xff\xff" + bytes([203, 0, 113, 9]), laddr=bytes(16), comm=b"curl")
    f.update(kw)
    return struct.pack("=QQQQIBBBBHHI16s16s16s", f["ts"], f["pid_tgid"], f["cg"], f["scope"], f["rule"],
                       f["verdict"], f["hook"], f["family"], f["proto"], f["rport"], f["lport"],
                       f["ifindex"], f["raddr"], f["laddr"], f["comm"])


def test_verdict_decodes_to_contract_fields() -> None:
    raw = _record()
    assert len(raw) == VERDICT_SIZE
    ev = decode_verdict(raw, {3: "C2"}.get, 5)
    assert ev["evt.type"] == "netvigil_verdict" and ev["evt.time"] == 1005 and ev["evt.dir"] == "<"
    assert (ev["netvigil.verdict"], ev["netvigil.rule"], ev["netvigil.hook"]) == ("deny", "C2", "connect4")
    assert (ev["fd.rip"], ev["fd.rport"], ev["fd.l4proto"], ev["fd.typechar"]) == ("203.0.113.9", 443, "tcp", "4")
    assert (ev["proc.pid"], ev["thread.tid"], ev["proc.cgroup_id"], ev["proc.name"]) == (42, 43, 77, "curl")
    assert ev["evt.res"] == "EPERM"


def test_audit_bind_and_tc_verdicts() -> None:
    ev = decode_verdict(_record(verdict=2, hook=5, rport=0, lport=4444, laddr=bytes(16), raddr=bytes(16),
                                family=6), lambda r: "R", 0)
    assert ev["netvigil.verdict"] == "audit" and ev["evt.res"] == "SUCCESS"
    assert ev["fd.lport"] == 4444 and "fd.rip" not in ev
    tc = decode_verdict(_record(hook=8, pid_tgid=0, comm=bytes(16), ifindex=9), lambda r: "R", 0)
    assert "proc.pid" not in tc and tc["netvigil.hook"] == "tc_egress" and tc["netvigil.ifindex"] == 9
