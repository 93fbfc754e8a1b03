"""Fixtures of the enforcement BPF tests: own cgroups, own netns + veth, own bpffs base.

Everything created here is removed in finalizers, even when a test fails.
Nothing is attached to the root cgroup or to a host interface.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sensor import cgroups
from sensor.enforcement.datapath import EnforcementDatapath, remove_all
from sensor.enforcement.layout import PinLayout

PID = os.getpid()
SUBNET = 100 + PID % 150
HOST_IP = f"10.231.{SUBNET}.1"
NS_IP = f"10.231.{SUBNET}.2"
NS_IP_OTHER = f"10.231.{SUBNET}.3"   # a second address inside the netns
TCP_PORT = 8080
TCP_PORT2 = 8081
UDP_PORT = 9000

SERVER = textwrap.dedent("""
    import socket, socketserver, sys, threading
    class Echo(socketserver.BaseRequestHandler):
        def handle(self):
            while True:
                data = self.request.recv(4096)
                if not data:
                    return
                self.request.sendall(data)
    class UEcho(socketserver.BaseRequestHandler):
        def handle(self):
            data, sock = self.request
            sock.sendto(data, self.client_address)
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    servers = [socketserver.ThreadingTCPServer(("0.0.0.0", p), Echo) for p in (%d, %d)]
    servers.append(socketserver.ThreadingUDPServer(("0.0.0.0", %d), UEcho))
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print("READY", flush=True)
    sys.stdin.read()
""") % (TCP_PORT, TCP_PORT2, UDP_PORT)

# client snippets: argv = host port
TCP_CLIENT = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
    s.settimeout(2)
    try:
        s.connect((sys.argv[1], int(sys.argv[2])))
        s.sendall(b"hi")
        print("OK", s.recv(16).decode())
    except OSError as e:
        print("ERR", e.errno)
""")
UDP_CLIENT = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    try:
        s.sendto(b"hi", (sys.argv[1], int(sys.argv[2])))
        print("OK", s.recvfrom(16)[0].decode())
    except OSError as e:
        print("ERR", e.errno)
""")
BIND_CLIENT = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((sys.argv[1], int(sys.argv[2])))
        s.listen(1)
        print("OK")
    except OSError as e:
        print("ERR", e.errno)
""")
# a long-lived TCP client: one line per "send" on stdin, prints OK or TIMEOUT
SESSION_CLIENT = textwrap.dedent("""
    import socket, sys
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    print("CONNECTED", s.getsockname()[1], flush=True)
    s.settimeout(1.5)
    for line in sys.stdin:
        try:
            s.sendall(b"ping")
            data = s.recv(16)
            print("OK" if data else "CLOSED", flush=True)
        except socket.timeout:
            print("TIMEOUT", flush=True)
        except OSError as e:
            print("ERR", e.errno, flush=True)
""")


def _join(cg: Path) -> None:
    (cg / "cgroup.procs").write_text(str(os.getpid()))


def run_in(cg: Path, code: str, *args: object, timeout: float = 15) -> str:
    """Run a python snippet as a new process inside cgroup `cg`; its stdout."""
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], preexec_fn=lambda: _join(cg),
                          capture_output=True, text=True, timeout=timeout)
    return proc.stdout.strip() or proc.stderr.strip()


def spawn_in(cg: Path, code: str, *args: object) -> subprocess.Popen:
    """Start a python snippet inside cgroup `cg` with pipes on stdin/stdout."""
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], preexec_fn=lambda: _join(cg),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)


def _rm_cgroup(path: Path) -> None:
    if not path.exists():
        return
    for child in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if child.is_dir():
            _rm_cgroup_dir(child)
    _rm_cgroup_dir(path)


def _rm_cgroup_dir(path: Path) -> None:
    for _ in range(50):
        try:
            for pid in (path / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)


@dataclass
class CgroupTree:
    """<mount>/netvigil-test-<pid> with children a and b."""

    parent: Path
    a: Path
    b: Path

    @property
    def a_id(self) -> int:
        return cgroups.cgroup_id(self.a)

    @property
    def b_id(self) -> int:
        return cgroups.cgroup_id(self.b)


def make_cgroup_tree(name: str) -> CgroupTree:
    """Create a test cgroup parent with children a and b."""
    parent = cgroups.mount() / name
    tree = CgroupTree(parent, parent / "a", parent / "b")
    for p in (tree.a, tree.b):
        p.mkdir(parents=True, exist_ok=True)
    return tree


@pytest.fixture(scope="module")
def cg_tree() -> Iterator[CgroupTree]:
    tree = make_cgroup_tree(f"netvigil-test-{PID}")
    try:
        yield tree
    finally:
        _rm_cgroup(tree.parent)


@dataclass
class TestNet:
    """A netns with echo servers, reached from the host through our own veth pair."""

    ns: str
    host_if: str
    server: subprocess.Popen


@pytest.fixture(scope="module")
def test_net() -> Iterator[TestNet]:
    ns = f"nvt{PID}"
    host_if, peer_if = f"nvh{PID % 100000}", f"nvp{PID % 100000}"

    def sh(*cmd: str) -> None:
        subprocess.run(cmd, check=True, capture_output=True)

    server = None
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        sh("ip", "link", "set", peer_if, "netns", ns)
        sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "-n", ns, "addr", "add", f"{NS_IP}/24", "dev", peer_if)
        sh("ip", "-n", ns, "addr", "add", f"{NS_IP_OTHER}/24", "dev", peer_if)
        sh("ip", "-n", ns, "link", "set", peer_if, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "READY"
        yield TestNet(ns, host_if, server)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def pin_layout_for_test(tag: str = "") -> PinLayout:
    """A bpffs base of this test process."""
    return PinLayout(Path(f"/sys/fs/bpf/netvigil-test-{PID}{tag}"))


@pytest.fixture(scope="module")
def datapath(cg_tree: CgroupTree, test_net: TestNet) -> Iterator[EnforcementDatapath]:
    """One loaded object for the module: programs on the test parent cgroup and our veth."""
    layout = pin_layout_for_test()
    dp = EnforcementDatapath(layout)
    try:
        dp.install(cg_tree.parent, [test_net.host_if])
        yield dp
    finally:
        try:
            dp.cleanup()
        finally:
            if layout.base.exists():
                remove_all(layout)
            shutil.rmtree(layout.base, ignore_errors=True)
