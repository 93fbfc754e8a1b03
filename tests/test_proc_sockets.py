"""Finding the TCP listeners open before the agent (sensor/proc_sockets.py) in a /proc tree."""
from __future__ import annotations

import os
from pathlib import Path

from sensor.proc_sockets import Listener, PacketSocket, PacketSocketScanner, listening_inodes, listening_sockets

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def _row(local: str, state: str, inode: int) -> str:
    return f"   0: {local} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000     0        0 {inode} 1\n"


def _proc(root: Path, pid: int, netns: Path, sockets: dict[int, int], tcp: str = HEADER, tcp6: str = HEADER) -> None:
    base = root / str(pid)
    (base / "ns").mkdir(parents=True)
    (base / "ns" / "net").symlink_to(netns)   # stat() follows it, as for the real nsfs link
    (base / "net").mkdir()
    (base / "net" / "tcp").write_text(tcp)
    (base / "net" / "tcp6").write_text(tcp6)
    (base / "fd").mkdir()
    (base / "fd" / "0").symlink_to("/dev/null")
    for fd, inode in sockets.items():
        (base / "fd" / str(fd)).symlink_to(f"socket:[{inode}]")


def test_only_listen_rows_are_read() -> None:
    text = HEADER + _row("0100007F:1F90", "0A", 111) + _row("0100007F:1F91", "01", 112) + "garbage\n"
    assert listening_inodes(text) == {111: 8080}


def test_one_owner_per_namespace_and_port_the_lowest_pid(tmp_path: Path) -> None:
    host_ns, pod_ns = tmp_path / "ns-host", tmp_path / "ns-pod"
    host_ns.write_text("")
    pod_ns.write_text("")
    proc = tmp_path / "proc"
    host_tcp = HEADER + _row("00000000:0050", "0A", 500)
    host_tcp6 = HEADER + _row("00000000000000000000000000000000:01BB", "0A", 501)
    pod_tcp = HEADER + _row("0100007F:0050", "0A", 900) + _row("0100007F:1234", "01", 901)
    _proc(proc, 40, host_ns, {3: 500, 4: 501}, host_tcp, host_tcp6)     # master
    _proc(proc, 41, host_ns, {3: 500}, host_tcp, host_tcp6)            # its worker
    _proc(proc, 77, pod_ns, {5: 900, 6: 901}, pod_tcp)
    _proc(proc, 78, host_ns, {7: 4242}, host_tcp, host_tcp6)           # a socket that does not listen
    found = sorted(listening_sockets(str(proc)), key=lambda item: (item.pid, item.port))
    host, pod = os.stat(host_ns).st_ino, os.stat(pod_ns).st_ino
    assert found == [Listener(host, 80, 500, 40, 3), Listener(host, 443, 501, 40, 4),
                     Listener(pod, 80, 900, 77, 5)]


def test_a_process_that_vanishes_meanwhile_is_skipped(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "12").mkdir(parents=True)     # no ns/, net/ or fd/: exited while we read
    assert listening_sockets(str(proc)) == []


PACKET_HEADER = "sk               RefCnt Type Proto  Iface R Rmem   User   Inode\n"


def _packet_row(inode: int, kind: int = 3) -> str:
    return f"ffff8f0a4d2b6800 3      {kind}    0003   0     1 0      0      {inode}\n"


def test_the_packet_scanner_reports_sockets_made_since_its_last_scan(tmp_path: Path) -> None:
    netns = tmp_path / "ns"
    netns.write_text("")
    proc = tmp_path / "proc"
    _proc(proc, 50, netns, {3: 700})
    packet = proc / "50" / "net" / "packet"
    packet.write_text(PACKET_HEADER + _packet_row(700))
    scanner = PacketSocketScanner(str(proc))
    assert scanner.scan() == []                       # open before the agent: not reported
    _proc(proc, 61, netns, {4: 800})                  # a new process, whose socket is new
    (proc / "61" / "fd" / "9").symlink_to("socket:[801]")
    packet.write_text(PACKET_HEADER + _packet_row(700) + _packet_row(800) + _packet_row(801, 2))
    assert sorted(scanner.scan(), key=lambda p: p.fd) == [PacketSocket(61, 4, 800, 3), PacketSocket(61, 9, 801, 2)]
    assert scanner.scan() == []                       # each socket once
    packet.write_text(PACKET_HEADER)                  # all closed
    assert scanner.scan() == []
