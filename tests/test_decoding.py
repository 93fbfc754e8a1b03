"""EventDecoder on records packed like bpf/sensor.h: the fields a rule or a user sees."""
from __future__ import annotations

import socket

import pytest

from sensor.bpf_layout import EXEC_EVENT, EXIT_EVENT, NET_EVENT, NET_OPS, check_against_header
from sensor.bpf_program import bpf_source_dir
from sensor.container_identity import CgroupResolver
from sensor.decoding import EventDecoder
from sensor.process_table import ProcessRecord, ProcessTable

# records packed as bpf/sensor.h lays them out (the one declaration, checked against the
# header below)
NET = NET_EVENT.struct
EXEC = EXEC_EVENT.reader(*(m.path for m in EXEC_EVENT.members if m.path != "args"))
EXIT = EXIT_EVENT.struct
BOOT_OFFSET = 1_700_000_000 * 10**9
OPS = NET_OPS


def net(op: str, *, pid: int = 4242, family: int = 2, stype: int = 2, laddr: str = "127.0.0.1", lport: int = 40000,
        raddr: str = "10.1.2.3", rport: int = 53, ret: int = 0, fd: int = 3, aux: int = 0, ts: int = 1000) -> bytes:
    def packed(text: str) -> bytes:
        if family not in (socket.AF_INET, socket.AF_INET6):
            return bytes(16)
        return socket.inet_pton(family, text).ljust(16, b"\0")

    return NET.pack(ts, 1, 4, pid, pid + 1, 1000, 1000, 0, b"python3", ret, fd, OPS[op], aux, ts,
                    family, stype, lport, rport, packed(laddr), packed(raddr))


def exec_record(pid: int, path: str, argv: list[str], ts: int = 2000) -> bytes:
    args = b"".join(a.encode() + b"\0" for a in argv)
    return EXEC.pack(ts, 1, 1, pid, pid, 0, 0, 0, path.rsplit("/", 1)[-1].encode(), pid, len(path), len(args),
                     len(argv), 0, path.encode()) + args


def exit_record(pid: int, code: int, ts: int = 3000) -> bytes:
    return EXIT.pack(ts, 1, 3, pid, pid, 0, 0, 0, b"curl", code, 0)


@pytest.fixture
def decoder() -> EventDecoder:
    table = ProcessTable(None)
    table.add(ProcessRecord("b:1:0", 1, 0, None, "init", "/sbin/init", "/sbin/init", [], 0, 0, 1, "host", 0))
    table.add(ProcessRecord("b:4242:5", 4242, 1, "b:1:0", "python3", "python3", "/usr/bin/python3.11",
                            ["client.py"], 1000, 1000, 1, "host", 5))
    return EventDecoder(table, "b", BOOT_OFFSET, CgroupResolver(None), lambda _pid: "host")


def decode(decoder: EventDecoder, raw: bytes) -> dict:
    event = decoder.decode(raw)
    assert event is not None
    return event


def test_udp_connect_is_tied_to_its_process_with_client_and_server(decoder: EventDecoder) -> None:
    ev = decode(decoder, net("connect", rport=53))
    assert ev["evt.type"] == "connect" and ev["evt.res"] == "SUCCESS" and ev["evt.time"] == BOOT_OFFSET + 1000
    assert (ev["proc.pid"], ev["proc.exepath"], ev["proc.cmdline"], ev["proc.pname"]) == (
        4242, "/usr/bin/python3.11", "python3 client.py", "init")
    assert (ev["fd.cip"], ev["fd.cport"], ev["fd.sip"], ev["fd.sport"]) == ("127.0.0.1", 40000, "10.1.2.3", 53)
    assert (ev["fd.lip"], ev["fd.rip"], ev["fd.rport"]) == ("127.0.0.1", "10.1.2.3", 53)
    assert ev["fd.name"] == "127.0.0.1:40000->10.1.2.3:53"
    assert (ev["fd.type"], ev["fd.typechar"], ev["fd.sockfamily"], ev["fd.l4proto"]) == ("ipv4", "4", "ip", "udp")
    assert ev["fd.connected"] is True and ev["thread.tid"] == 4243 and ev["fd.num"] == 3


def test_failed_connect_carries_the_errno(decoder: EventDecoder) -> None:
    ev = decode(decoder, net("connect", stype=1, ret=-111))
    assert (ev["evt.res"], ev["evt.rawres"], ev["fd.connected"], ev["fd.l4proto"]) == (
        "ECONNREFUSED", -111, False, "tcp")


def test_accept_makes_the_remote_end_the_client(decoder: EventDecoder) -> None:
    ev = decode(decoder, net("accept", stype=1, lport=8080, raddr="10.9.9.9", rport=51000, ret=7))
    assert (ev["fd.cip"], ev["fd.cport"], ev["fd.sip"], ev["fd.sport"]) == ("10.9.9.9", 51000, "127.0.0.1", 8080)
    assert ev["fd.name"] == "10.9.9.9:51000->127.0.0.1:8080"
    assert (ev["evt.res"], ev["evt.rawres"], ev["fd.connected"]) == ("SUCCESS", 7, True)


def test_listen_reports_the_local_end_and_backlog(decoder: EventDecoder) -> None:
    ev = decode(decoder, net("listen", stype=1, laddr="0.0.0.0", lport=8080, aux=128))
    assert (ev["fd.lip"], ev["fd.lport"], ev["fd.sip"], ev["fd.sport"]) == ("0.0.0.0", 8080, "0.0.0.0", 8080)
    assert (ev["fd.name"], ev["evt.arg.backlog"], ev["fd.connected"]) == ("0.0.0.0:8080", 128, False)
    assert "fd.rip" not in ev and "fd.cip" not in ev


def test_sendto_and_dup2_have_their_own_semantics(decoder: EventDecoder) -> None:
    sent = decode(decoder, net("sendto", ret=5))
    assert (sent["fd.connected"], sent["fd.name_changed"], sent["evt.res"]) == (False, True, "SUCCESS")
    dup = decode(decoder, net("dup2", stype=1, fd=3, aux=1, ret=-9))
    assert (dup["evt.type"], dup["evt.arg.newfd"], dup["evt.res"], dup["fd.connected"]) == ("dup2", 1, "SUCCESS", True)
    assert "evt.arg.newfd" not in decode(decoder, net("connect"))


def test_packet_socket_and_ipv6(decoder: EventDecoder) -> None:
    pkt = decode(decoder, net("socket", family=17, stype=3))
    assert (pkt["evt.arg.domain"], pkt["evt.arg.type"], pkt["fd.type"]) == ("AF_PACKET", "SOCK_RAW", "packet")
    assert "fd.lip" not in pkt
    v6 = decode(decoder, net("connect", family=socket.AF_INET6, stype=1, laddr="::1", raddr="fd00::7", rport=443))
    assert (v6["fd.type"], v6["fd.typechar"], v6["fd.sip"], v6["fd.name"]) == ("ipv6", "6", "fd00::7", "::1:40000->fd00::7:443")


def test_exec_changes_the_process_fields_of_later_events(decoder: EventDecoder) -> None:
    before = decode(decoder, net("connect"))
    decode(decoder, exec_record(4242, "/usr/bin/curl", ["curl", "-s", "http://x"]))
    after = decode(decoder, net("connect"))
    assert before["proc.exepath"] == "/usr/bin/python3.11"
    assert (after["proc.exepath"], after["proc.cmdline"], after["proc.pname"]) == (
        "/usr/bin/curl", "curl -s http://x", "init")
    assert after["proc.exec_id"] != before["proc.exec_id"]


def test_unknown_process_gets_its_fields_once_known(decoder: EventDecoder) -> None:
    assert decode(decoder, net("connect", pid=777)).get("proc.exepath") is None
    decode(decoder, exec_record(777, "/bin/nc", ["nc", "h", "1"]))
    assert decode(decoder, net("connect", pid=777))["proc.exepath"] == "/bin/nc"
    decode(decoder, exit_record(777, 0))
    assert decode(decoder, net("connect", pid=777)).get("proc.exepath") is None


def test_events_are_independent_of_each_other(decoder: EventDecoder) -> None:
    first = decode(decoder, net("connect", rport=1))
    first["k8s.pod.name"] = "added-by-a-consumer"
    first["fd.rport"] = -1
    second = decode(decoder, net("connect", rport=2))
    assert "k8s.pod.name" not in second and second["fd.rport"] == 2
    assert second["evt.num"] == first["evt.num"] + 1 and decoder.events == second["evt.num"]


def test_record_in_a_shared_buffer_decodes_like_a_copy(decoder: EventDecoder) -> None:
    raw = net("accept", stype=1, rport=9)
    buf = memoryview(b"\xff" * 24 + raw + b"\xff" * 64)
    in_place = decoder.decode_at(buf, 24, len(raw))
    copied = decode(decoder, raw)
    assert in_place is not None
    assert {k: v for k, v in in_place.items() if k != "evt.num"} == {k: v for k, v in copied.items() if k != "evt.num"}


def test_malformed_records_are_counted_not_raised(decoder: EventDecoder) -> None:
    for raw in (b"", b"\0" * 10, net("connect")[:100], bytes(16) + b"\x09" + bytes(200)):
        assert decoder.decode(raw) is None
    assert decoder.decode_errors == 4
    assert decoder.events == 0


# --- the declared layouts against bpf/sensor.h (BCC's clang checks each offset and size)
def test_declared_layouts_agree_with_the_header() -> None:
    assert check_against_header(bpf_source_dir()) == []


@pytest.mark.parametrize(("edit", "named"), [
    (("    u16 lport;          /* host byte order */\n    u16 rport;\n",
      "    u16 rport;\n    u16 lport;          /* host byte order */\n"), "nv_net_event.s.lport"),
    (("    u32 op;             /* enum nv_net_op */\n", "    u64 op;\n"), "nv_net_event.op"),
    (("    NV_OP_BIND = 5,\n", "    NV_OP_BIND = 12,\n"), "NV_OP_BIND == 5"),
])
def test_layout_check_fails_when_the_header_changes(tmp_path, edit: tuple[str, str], named: str) -> None:
    header = (bpf_source_dir() / "sensor.h").read_text()
    old, new = edit
    assert old in header
    (tmp_path / "sensor.h").write_text(header.replace(old, new))
    problems = check_against_header(tmp_path)
    assert any(p.startswith(f"python expects {named}") for p in problems), problems


def test_verdict_events_store_ends_and_derive_the_rest() -> None:
    from sensor.enforcement.verdicts import _VERDICT, decode_verdict
    addr = socket.inet_pton(socket.AF_INET, "203.0.113.9").rjust(16, b"\0")
    raw = _VERDICT.pack(5, 42 << 32 | 43, 77, 0, 3, 1, 1, 4, 6, 443, 0, 0, addr, bytes(16), b"curl")
    ev = decode_verdict(raw, {3: "C2"}.get, 0)
    assert "fd.sip" not in dict.keys(ev)  # stored once, as the remote end
    assert (ev["fd.sip"], ev["fd.sport"], ev["fd.name"]) == \
        ("203.0.113.9", 443, "0.0.0.0:0->203.0.113.9:443")


def test_exec_on_a_cgroup2_only_host_takes_the_container_from_the_cgroup_path(tmp_path) -> None:
    cid = "4f5ddbbdd6a4e1a6e1b2b0c65a5b26ad1e24e1d4e1a6e1b2b0c65a5b26ad1e2a"
    (tmp_path / "system.slice").mkdir()
    asked: list[int] = []

    def from_proc(pid: int) -> str:
        asked.append(pid)
        return cid[:12]

    for hybrid, expected in ((False, "host"), (True, cid[:12])):
        resolver = CgroupResolver(str(tmp_path), hybrid=hybrid)
        table = ProcessTable(None)
        dec = EventDecoder(table, "b", BOOT_OFFSET, resolver, from_proc)
        raw = bytearray(exec_record(77, "/bin/true", ["true"]))
        raw[8:16] = (tmp_path / "system.slice").stat().st_ino.to_bytes(8, "little")
        ev = decode(dec, bytes(raw))
        assert ev["container.id"] == expected
    assert asked == [77]   # /proc asked only on the hybrid host
