"""Cgroup hook set: accepts on servers that were listening before the sensor started.

That set learns a port's owner at listen(); servers older than the agent (an agent
restarted under running servers) are found in /proc at start and seeded. The servers
here are started first, then the module's own cgroup-set sensor is loaded.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from conftest import LiveSensor, loaded_sensor

PY = sys.executable
NETNS = f"nvlsn{os.getpid()}"

SERVER = """
import os, socket, sys
port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.1', port)); srv.listen(16)
workers = int(os.environ.get('WORKERS', '0'))
pids = []
for _ in range(workers):
    pid = os.fork()
    if pid == 0:
        while True:
            conn, _ = srv.accept(); conn.close()
    pids.append(pid)
print(srv.getsockname()[1], srv.fileno(), *pids, flush=True)
if workers:
    os.wait()
while True:
    conn, _ = srv.accept(); conn.close()
"""


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int
    fd: int
    workers: list[int]


def _start(argv: list[str], port: int = 0, workers: int = 0) -> Server:
    proc = subprocess.Popen([*argv, PY, "-c", textwrap.dedent(SERVER), str(port)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "WORKERS": str(workers)})
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert line, f"server did not start (exit {proc.poll()})"
    return Server(proc, int(line[0]), int(line[1]), [int(p) for p in line[2:]])


def _stop(server: Server) -> None:
    for pid in server.workers:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    server.proc.kill()
    server.proc.wait()


@pytest.fixture(scope="module")
def old_servers() -> Iterator[dict[str, Server]]:
    """Servers listening before the sensor: on loopback, a pre-fork one, and one on the
    same port inside a network namespace of the test's own; then the sensor is loaded."""
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    servers: dict[str, Server] = {}
    try:
        subprocess.run(["ip", "-n", NETNS, "link", "set", "lo", "up"], check=True)
        servers["plain"] = _start([])
        servers["prefork"] = _start([], workers=2)
        # nsenter, not `ip netns exec` (which mounts a sysfs of its own)
        servers["netns"] = _start(["nsenter", f"--net=/run/netns/{NETNS}"], port=servers["plain"].port)
        yield servers
    finally:
        for server in servers.values():
            _stop(server)
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)


@pytest.fixture(scope="module")
def sensor(old_servers: dict[str, Server]) -> Iterator[LiveSensor]:
    """A cgroup-set sensor loaded after the servers (so it never saw their listen())."""
    with loaded_sensor("cgroup") as live:
        yield live


def _accept_on(live: LiveSensor, port: int, client: tuple[str, int]) -> dict:
    return live.wait_for(lambda e: e.get("evt.type") == "accept" and e.get("fd.sport") == port
                         and (e.get("fd.cip"), e.get("fd.cport")) == client)


def test_accepts_on_a_server_older_than_the_sensor_are_reported(old_servers, sensor) -> None:
    server = old_servers["plain"]
    sensor.clear()
    client = socket.create_connection(("127.0.0.1", server.port))
    ev = _accept_on(sensor, server.port, client.getsockname())
    client.close()
    assert ev["proc.pid"] == server.proc.pid and ev["proc.name"] == "python"
    assert ev["fd.num"] == server.fd and ev["evt.res"] == "SUCCESS"


def test_an_older_pre_fork_server_is_reported_as_the_process_that_listened(old_servers, sensor) -> None:
    server = old_servers["prefork"]
    assert len(server.workers) == 2
    sensor.clear()
    client = socket.create_connection(("127.0.0.1", server.port))
    ev = _accept_on(sensor, server.port, client.getsockname())
    client.close()
    assert ev["proc.pid"] == server.proc.pid   # the master, as for a server seen listening


def test_the_same_port_in_another_network_namespace_has_its_own_owner(old_servers, sensor) -> None:
    inside = old_servers["netns"]
    assert inside.port == old_servers["plain"].port
    sensor.clear()
    code = (f"import socket; s = socket.create_connection(('127.0.0.1', {inside.port})); "
            "print(s.getsockname()[1], flush=True); s.recv(1)")
    out = subprocess.run(["nsenter", f"--net=/run/netns/{NETNS}", PY, "-c", code],
                         capture_output=True, text=True, timeout=20, check=True)
    ev = _accept_on(sensor, inside.port, ("127.0.0.1", int(out.stdout)))
    assert ev["proc.pid"] == inside.proc.pid != old_servers["plain"].proc.pid


def test_a_seeded_listener_is_forgotten_when_it_closes(sensor) -> None:
    """Its (namespace, port) entry goes with the socket, as a listener seen live does."""
    late = _start([])
    table = sensor.sensor.program.bpf[b"listeners"]
    ports = lambda: {k.port for k in table.keys()}  # noqa: E731
    assert late.port in ports()          # seen at listen(), not seeded
    table.clear()
    assert sensor.sensor.seed_listeners() >= 3 and late.port in ports()
    _stop(late)
    deadline = time.monotonic() + 5
    while late.port in ports() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert late.port not in ports()
