"""The live sensor against the real kernel: real processes, sockets and containers."""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import pytest

from sensor.agent import Sensor, SensorOptions

PY = sys.executable
SELF_COMM = Path("/proc/self/comm").read_text().strip()


def _server(family: int = socket.AF_INET, host: str = "127.0.0.1", backlog: int = 16) -> socket.socket:
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.bind((host, 0))
    srv.listen(backlog)
    return srv


def _run(code: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-c", textwrap.dedent(code), *extra], capture_output=True, text=True,
                          timeout=20, check=True)


def test_connect_is_tied_to_the_client_process(live) -> None:
    srv = _server()
    port = srv.getsockname()[1]
    proc = subprocess.Popen([PY, "-c", f"import socket; socket.create_connection(('127.0.0.1', {port})).close()"])
    assert proc.wait(timeout=20) == 0
    ev = live.wait_for(live.of_pid(proc.pid, "connect"))
    assert ev["proc.exepath"] == PY  # the path as exec'd (symlinks not resolved, as Falco)
    assert ev["proc.cmdline"].startswith("python") and f"('127.0.0.1', {port})" in ev["proc.cmdline"]
    assert ev["proc.pname"] == SELF_COMM
    assert ev["proc.ppid"] == os.getpid()
    assert (ev["fd.sip"], ev["fd.sport"], ev["fd.rport"]) == ("127.0.0.1", port, port)
    assert ev["fd.l4proto"] == "tcp" and ev["fd.type"] == "ipv4"
    assert ev["evt.res"] == "SUCCESS" and ev["fd.cport"] > 0
    srv.close()


def test_failed_connect_reports_the_errno(live) -> None:
    probe = _server()
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    proc = subprocess.Popen([PY, "-c", f"import socket\ntry: socket.create_connection(('127.0.0.1', {port}))\nexcept OSError: pass"])
    proc.wait(timeout=20)
    ev = live.wait_for(live.of_pid(proc.pid, "connect"))
    assert ev["evt.res"] == "ECONNREFUSED" and ev["evt.rawres"] < 0


def test_accept_carries_the_client_address(live) -> None:
    srv = _server()
    port = srv.getsockname()[1]
    out = subprocess.Popen([PY, "-c", f"import socket,time; s=socket.create_connection(('127.0.0.1', {port})); "
                            "print(s.getsockname()[1], flush=True); time.sleep(1)"], stdout=subprocess.PIPE, text=True)
    conn, peer = srv.accept()
    client_port = int(out.stdout.readline())
    ev = live.wait_for(lambda e: e.get("evt.type") in ("accept", "accept4") and e.get("proc.pid") == os.getpid())
    assert (ev["fd.cip"], ev["fd.cport"]) == ("127.0.0.1", client_port) == peer
    assert (ev["fd.sip"], ev["fd.sport"]) == ("127.0.0.1", port)
    assert ev["fd.lport"] == port and ev["fd.rport"] == client_port
    out.wait(timeout=20)
    conn.close()
    srv.close()


def test_listener_reports_its_port(live) -> None:
    proc = subprocess.Popen([PY, "-c", "import socket,sys,time; s=socket.socket(); s.bind(('127.0.0.1', 0)); "
                             "s.listen(); print(s.getsockname()[1], flush=True); time.sleep(0.5)"],
                            stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    ev = live.wait_for(live.of_pid(proc.pid, "listen"))
    assert ev["fd.lport"] == port == ev["fd.sport"]
    assert ev["fd.l4proto"] == "tcp" and ev["proc.name"] == "python"
    proc.wait(timeout=20)


def test_listener_on_ephemeral_port_without_explicit_bind(live) -> None:
    proc = subprocess.Popen([PY, "-c", "import socket,time; s=socket.socket(); s.listen(); "
                             "print(s.getsockname()[1], flush=True); time.sleep(0.5)"],
                            stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    ev = live.wait_for(live.of_pid(proc.pid, "listen"))
    assert ev["fd.lport"] == port
    proc.wait(timeout=20)


def test_udp_sends_to_two_destinations(live) -> None:
    proc = subprocess.Popen([PY, "-c", "import socket; u=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                             "[u.sendto(b'x', d) for d in [('127.0.0.1', 9999), ('127.0.0.2', 5353), ('127.0.0.1', 9999)]]"])
    proc.wait(timeout=20)
    evs = live.wait_for_all(live.of_pid(proc.pid, "sendto"), 2)
    assert sorted((e["fd.sip"], e["fd.sport"]) for e in evs) == [("127.0.0.1", 9999), ("127.0.0.2", 5353)]
    assert all(e["fd.l4proto"] == "udp" and e["fd.name_changed"] for e in evs)


def test_udp_sendmsg_and_connect(live) -> None:
    proc = subprocess.Popen([PY, "-c", "import socket; u=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                             "u.sendmsg([b'x'], [], 0, ('127.0.0.3', 53)); v=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                             "v.connect(('127.0.0.4', 123))"])
    proc.wait(timeout=20)
    msg = live.wait_for(live.of_pid(proc.pid, "sendmsg"))
    assert (msg["fd.sip"], msg["fd.sport"], msg["fd.l4proto"]) == ("127.0.0.3", 53, "udp")
    con = live.wait_for(live.of_pid(proc.pid, "connect"))
    assert (con["fd.sip"], con["fd.sport"], con["fd.l4proto"]) == ("127.0.0.4", 123, "udp")


def test_ipv6_connect_and_accept(live) -> None:
    srv = _server(socket.AF_INET6, "::1")
    port = srv.getsockname()[1]
    proc = subprocess.Popen([PY, "-c", f"import socket,time; s=socket.create_connection(('::1', {port})); time.sleep(0.3)"])
    conn, peer = srv.accept()
    proc.wait(timeout=20)
    ev = live.wait_for(live.of_pid(proc.pid, "connect"))
    assert (ev["fd.type"], ev["fd.typechar"], ev["fd.sip"], ev["fd.sport"]) == ("ipv6", "6", "::1", port)
    acc = live.wait_for(lambda e: e.get("evt.type") in ("accept", "accept4") and e.get("fd.sport") == port)
    assert (acc["fd.cip"], acc["fd.cport"]) == ("::1", peer[1])
    conn.close()
    srv.close()


def test_three_level_process_chain(live, tmp_path: Path) -> None:
    busybox = shutil.which("busybox")
    assert busybox, "busybox-static is installed by the bootstrap"
    nc = tmp_path / "nc"
    nc.symlink_to(busybox)
    srv = _server()
    port = srv.getsockname()[1]
    inner = f"import subprocess; subprocess.run(['{nc}', '-w', '1', '127.0.0.1', '{port}'], stdin=subprocess.DEVNULL)"
    proc = subprocess.Popen(["sh", "-c", f"{PY} -c \"{inner}\"; true"])
    conn, _ = srv.accept()
    conn.close()
    proc.wait(timeout=20)
    ev = live.wait_for(lambda e: e.get("evt.type") == "connect" and e.get("fd.sport") == port)
    assert ev["proc.name"] == "nc"
    assert ev["proc.pname"] == "python"
    assert ev["proc.aname"][:3] == ["python", "sh", SELF_COMM]
    assert ev["proc.apid"][1] == proc.pid


def test_dup2_of_a_socket_onto_stdio(live) -> None:
    """A socket duplicated onto stdin and stdout, then a program exec'd on it (what a
    reverse shell does): reported as dup2 onto fds 0 and 1, by the dup2 syscall hook
    (hook set "syscalls") or from the exec'd process's fds 0-2 (hook set "cgroup")."""
    srv = _server()
    port = srv.getsockname()[1]
    proc = subprocess.Popen([PY, "-c", f"import os,socket; s=socket.create_connection(('127.0.0.1', {port})); "
                             "os.dup2(s.fileno(), 0); os.dup2(s.fileno(), 1); os.dup2(s.fileno(), 7); "
                             "os.execv('/bin/true', ['true'])"],
                            stdout=subprocess.DEVNULL)
    conn, _ = srv.accept()
    proc.wait(timeout=20)
    evs = live.wait_for_all(live.of_pid(proc.pid, "dup2"), 2)
    assert sorted(e["evt.rawres"] for e in evs) == [0, 1]  # fd 7 is not stdio: not reported
    assert all(e["fd.sip"] == "127.0.0.1" and e["fd.sport"] == port for e in evs)
    conn.close()
    srv.close()


def test_dup2_of_a_pipe_is_not_reported(live) -> None:
    proc = subprocess.Popen([PY, "-c", "import os; r, w = os.pipe(); os.dup2(w, 1)"], stdout=subprocess.DEVNULL)
    proc.wait(timeout=20)
    live.wait_for(live.of_pid(proc.pid, "procexit"))
    assert not [e for e in live.events if e.get("proc.pid") == proc.pid and e["evt.type"] == "dup2"]


def test_exec_fork_and_exit_are_seen(live) -> None:
    proc = subprocess.Popen(["sh", "-c", "sleep 0; exit 7"])
    assert proc.wait(timeout=20) == 7
    execs = live.wait_for(live.of_pid(proc.pid, "execve"))
    assert execs["proc.name"] == "sh" and execs["proc.cmdline"] == "sh -c sleep 0; exit 7"
    ex = live.wait_for(live.of_pid(proc.pid, "procexit"))
    assert ex["evt.arg.status"] == 7
    clone = live.wait_for(live.of_pid(proc.pid, "clone"))  # sh forks for `sleep`
    child = live.wait_for(live.of_pid(clone["evt.rawres"], "execve"))
    assert child["proc.name"] == "sleep" and child["proc.pname"] == "sh"
    assert child["proc.pexec_id"] == execs["proc.exec_id"]


def test_exec_arguments_come_whole_from_the_new_image(live) -> None:
    """Arguments are read from the exec'd image's memory (BTF offsets): more than the
    syscall hook's 20 arguments, one longer than its 256-byte limit, and no truncation."""
    long_arg = "L" * 400
    argv = ["sh", "-c", "exit 0", long_arg, *[f"a{i}" for i in range(30)]]
    proc = subprocess.Popen(argv)
    assert proc.wait(timeout=20) == 0
    ev = live.wait_for(live.of_pid(proc.pid, "execve"))
    assert ev["proc.cmdline"] == " ".join(argv)
    assert not ev.get("proc.args_truncated")


def test_exec_arguments_past_the_limit_are_marked_truncated(live) -> None:
    argv = ["sh", "-c", "exit 0", *["x" * 100 for _ in range(15)]]  # 1,500 bytes of arguments
    proc = subprocess.Popen(argv)
    assert proc.wait(timeout=20) == 0
    ev = live.wait_for(live.of_pid(proc.pid, "execve"))
    assert ev["proc.args_truncated"] is True
    assert " ".join(argv).startswith(ev["proc.cmdline"]) and len(ev["proc.cmdline"]) > 900


def test_process_killed_by_a_signal_has_no_exit_code(live) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    live.wait_for(live.of_pid(proc.pid, "execve"))
    proc.kill()
    proc.wait(timeout=20)
    assert live.wait_for(live.of_pid(proc.pid, "procexit"))["evt.arg.status"] == -1


def test_threads_are_not_reported_as_forks(live) -> None:
    proc = subprocess.Popen([PY, "-c", "import os, threading\n"
                             "for _ in range(5):\n t = threading.Thread(target=os.getpid); t.start(); t.join()"])
    assert proc.wait(timeout=20) == 0
    live.wait_for(live.of_pid(proc.pid, "procexit"))
    assert not [e for e in live.events if e.get("proc.pid") == proc.pid and e["evt.type"] == "clone"]


def test_process_hooks_use_no_syscall_tracepoint_when_btf_has_the_offsets(live) -> None:
    """exec arguments, exit codes and fork-vs-thread come from sched/task tracepoints:
    no syscall tracepoint is attached for them (each one slows every syscall)."""
    from sensor.bpf_program import BTF_OFFSETS

    program = live.sensor.program
    assert set(program.offsets) == set(BTF_OFFSETS)
    attached = {name.decode() if isinstance(name, bytes) else name for name in program.bpf.tracepoint_fds}
    for syscall in ("execve", "execveat", "exit_group", "clone", "clone3"):
        assert not [tp for tp in attached if tp.endswith(f"sys_enter_{syscall}")], attached
    assert any(tp.endswith("task_newtask") for tp in attached)


@pytest.mark.parametrize("hook_set", ["live", "live_cgroup"])
def test_packet_socket_is_seen(hook_set, request) -> None:
    """AF_PACKET sockets: the socket() syscall hook (hook set "syscalls"), fentry on
    packet_create (hook set "cgroup"), or, where the kernel refuses fentry (this VM), the
    cgroup set's /proc scan, which finds a socket held across a scan."""
    live = request.getfixturevalue(hook_set)
    live.clear()
    scanned = not live.sensor.program.packet_hook
    code = ("import socket, sys, time; s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0); "
            f"print(s.fileno(), flush=True); time.sleep({2.5 if scanned else 0}); s.close()")
    proc = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True)
    fd = int(proc.stdout.readline())
    ev = live.wait_for(live.of_pid(proc.pid, "socket"), timeout=5)
    assert proc.wait(timeout=20) == 0
    assert (ev["evt.arg.domain"], ev["evt.arg.type"]) == ("AF_PACKET", "SOCK_RAW")
    assert ev["fd.num"] == fd and ev["proc.name"] == "python"


def test_network_hooks_use_no_syscall_tracepoint(live_cgroup) -> None:
    """With BTF and a cgroup2 root, the whole sensor runs on cgroup programs and sock,
    sched and task tracepoints: not one syscall tracepoint (each would send every syscall
    on the node through the tracing slow path)."""
    program = live_cgroup.sensor.program
    assert program.hooks.hooks == "cgroup", program.hooks.reason
    attached = {name.decode() if isinstance(name, bytes) else name for name in program.bpf.tracepoint_fds}
    assert not [tp for tp in attached if tp.startswith("syscalls:")], attached
    assert "sock:inet_sock_set_state" in attached


@pytest.mark.parametrize("hook_set", ["live", "live_cgroup"])
def test_accept_in_a_pre_fork_worker_is_attributed_to_the_listening_process(hook_set, request) -> None:
    """A pre-fork server: the parent listens, a forked worker accepts. The cgroup hook set
    sees the passive open in softirq and reports it for the process that listened on the
    port (the rule documented in bpf/sensor_net_cgroup.c); the syscalls set, for the
    worker that called accept()."""
    live = request.getfixturevalue(hook_set)
    live.clear()
    code = """
    import os, socket, sys, time
    srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(8)
    print(srv.getsockname()[1], flush=True)
    worker = os.fork()
    if worker == 0:
        conn, _ = srv.accept(); conn.close(); os._exit(0)
    print(worker, flush=True)
    os.waitpid(worker, 0)
    """
    proc = subprocess.Popen([PY, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    worker = int(proc.stdout.readline())
    client = socket.create_connection(("127.0.0.1", port))
    assert proc.wait(timeout=20) == 0
    ev = live.wait_for(lambda e: e.get("evt.type") in ("accept", "accept4") and e.get("fd.sport") == port)
    expected = proc.pid if live.sensor.program.hooks.hooks == "cgroup" else worker
    assert ev["proc.pid"] == expected and ev["proc.name"] == "python"
    assert (ev["fd.cip"], ev["fd.cport"]) == client.getsockname()
    client.close()


def test_async_connect_outcome_is_attributed_from_softirq(live) -> None:
    """A SYN dropped on a full accept queue is retransmitted by a timer: the connection
    completes in softirq context, long after connect() returned EINPROGRESS, and is still
    attributed to the process that connected."""
    srv = _server(backlog=0)
    port = srv.getsockname()[1]
    code = f"""
    import select, socket, time
    held = socket.create_connection(('127.0.0.1', {port}))  # fills the backlog-0 queue
    s = socket.socket(); s.setblocking(False)
    print(s.connect_ex(('127.0.0.1', {port})), flush=True)
    time.sleep(4)
    """
    proc = subprocess.Popen([PY, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)
    assert int(proc.stdout.readline()) == 115  # EINPROGRESS
    srv.accept()[0].close()  # room again: the retransmitted SYN (timer, softirq) gets in
    ev = live.wait_for(live.of_pid(proc.pid, "connect_result"), timeout=8)
    assert ev["evt.res"] == "SUCCESS" and ev["fd.sport"] == port and ev["proc.name"] == "python"
    connects = [e for e in live.events if e.get("proc.pid") == proc.pid and e["evt.type"] == "connect"]
    assert "EINPROGRESS" in [e["evt.res"] for e in connects]
    proc.kill()
    proc.wait()
    srv.close()


def test_nonblocking_connect_that_completes_at_once_reports_its_outcome(live) -> None:
    """On loopback the handshake of a non-blocking connect completes inside connect(),
    which still returns EINPROGRESS: the outcome follows as one connect_result."""
    srv = _server()
    port = srv.getsockname()[1]
    code = f"""
    import socket
    s = socket.socket(); s.setblocking(False)
    print(s.connect_ex(('127.0.0.1', {port})), s.getsockname()[1], flush=True)
    """
    out = _run(code).stdout.split()
    ev = live.wait_for(lambda e: e["evt.type"] == "connect_result" and e.get("fd.sport") == port)
    assert ev["evt.res"] == "SUCCESS" and ev["proc.name"] == "python"
    assert ev["fd.cport"] == int(out[1])
    srv.close()


def test_blocking_connect_completed_in_softirq_has_its_local_port(live) -> None:
    """A blocking connect whose handshake completes from a retransmit timer (softirq, while
    connect() sleeps) returns 0 with its local port, and reports no separate outcome."""
    srv = _server(backlog=0)
    port = srv.getsockname()[1]
    code = f"""
    import socket, sys
    held = socket.create_connection(('127.0.0.1', {port}))  # fills the backlog-0 queue
    print('held', flush=True)
    s = socket.socket()
    s.connect(('127.0.0.1', {port}))  # blocking: sleeps until the handshake completes
    print(s.getsockname()[1], flush=True)
    """
    proc = subprocess.Popen([PY, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    threading.Timer(0.5, lambda: srv.accept()[0].close()).start()  # room for the retransmitted SYN
    local_port = int(proc.stdout.readline())
    assert proc.wait(timeout=20) == 0
    ev = live.wait_for(lambda e: e.get("proc.pid") == proc.pid and e["evt.type"] == "connect"
                       and e.get("fd.cport") == local_port, timeout=8)
    assert ev["evt.res"] == "SUCCESS" and ev["fd.sport"] == port
    assert not [e for e in live.events if e.get("proc.pid") == proc.pid and e["evt.type"] == "connect_result"]
    srv.close()


def test_outcome_left_by_a_fast_open_socket_is_not_reported_for_the_next_connect(live) -> None:
    """A TCP Fast Open connect (its SYN sent by sendto) leaves an outcome no connect()
    collects; a later socket at the same kernel address whose SYN is dropped (full accept
    queue, still SYN_SENT) must not get that stale outcome as its connect_result."""
    tfo_listener = _server(backlog=128)
    full = _server(backlog=0)
    filler = socket.create_connection(full.getsockname())
    me = os.getpid()
    bogus = []
    for _ in range(30):
        tfo = socket.socket()
        tfo.sendto(b"x", socket.MSG_FASTOPEN, tfo_listener.getsockname())
        conn, _ = tfo_listener.accept()
        conn.close()
        tfo.close()
        pending = socket.socket()
        pending.setblocking(False)
        assert pending.connect_ex(full.getsockname()) == errno.EINPROGRESS
        fd = pending.fileno()
        live.wait_for(lambda e, fd=fd: e.get("proc.pid") == me and e["evt.type"] == "connect"
                      and e.get("fd.num") == fd and e["evt.res"] == "EINPROGRESS")
        bogus += [e for e in live.events if e.get("proc.pid") == me and e["evt.type"] == "connect_result"
                  and e.get("fd.num") == fd]
        pending.close()
        live.clear()
    assert not bogus, bogus[:3]
    for s in (filler, full, tfo_listener):
        s.close()


@pytest.fixture
def busybox_bundle(tmp_path: Path):
    """A runc bundle with a busybox rootfs, in a Kubernetes-style cgroup; deleted after."""
    busybox = shutil.which("busybox")
    assert busybox and shutil.which("runc"), "runc and busybox-static are installed by the bootstrap"
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy(busybox, rootfs / "bin" / "busybox")
    for applet in ("sh", "nc", "sleep"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    subprocess.run(["runc", "spec", "--bundle", str(tmp_path)], check=True)
    cfg_path = tmp_path / "config.json"
    cfg = json.loads(cfg_path.read_text())
    container_id = uuid.uuid4().hex + uuid.uuid4().hex
    pod_uid = str(uuid.uuid4())
    cfg["process"]["terminal"] = False
    cfg["root"]["readonly"] = True
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "network"]
    cfg["linux"]["cgroupsPath"] = f"/kubepods/besteffort/pod{pod_uid}/{container_id}"
    name = f"nv-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    def start(args: list[str]) -> subprocess.Popen[str]:
        cfg["process"]["args"] = args
        cfg_path.write_text(json.dumps(cfg))
        return subprocess.Popen(["runc", "run", "--bundle", str(tmp_path), name],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    try:
        yield start, container_id, pod_uid
    finally:
        subprocess.run(["runc", "delete", "--force", name], capture_output=True)
        for pod_dir in Path("/sys/fs/cgroup").glob(f"*/kubepods/besteffort/pod{pod_uid}"):
            try:
                pod_dir.rmdir()
            except OSError:
                pass


def test_container_process_has_its_container_id(live, busybox_bundle) -> None:
    start, container_id, pod_uid = busybox_bundle
    srv = _server()
    port = srv.getsockname()[1]
    acceptor = threading.Thread(target=lambda: srv.accept()[0].close(), daemon=True)
    acceptor.start()
    container = start(["/bin/sh", "-c", f"nc -w 2 127.0.0.1 {port} </dev/null; sleep 1"])
    try:
        ev = live.wait_for(lambda e: e.get("evt.type") == "connect" and e.get("fd.sport") == port, timeout=15)
    finally:
        _, err = container.communicate(timeout=30)
    assert container.returncode == 0, err
    assert ev["container.id"] == container_id[:12]
    assert ev["proc.exe"] == "nc" and ev["proc.pname"] == "sh"  # busybox re-execs itself: comm is "exe"
    assert ev.get("k8s.pod.uid") == pod_uid
    shell = live.wait_for(lambda e: e.get("evt.type") == "execve" and e.get("proc.pid") == ev["proc.ppid"])
    assert shell["container.id"] == container_id[:12] and shell["proc.exepath"] == "/bin/sh"
    srv.close()


def test_host_process_is_host(live) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert live.wait_for(live.of_pid(proc.pid, "execve"))["container.id"] == "host"


def test_burst_larger_than_the_ring_buffer_is_counted_as_lost() -> None:
    seen: list[dict] = []
    tiny = Sensor(seen.append, SensorOptions(ringbuf_pages=1))
    tiny.start()
    try:
        proc = subprocess.run([PY, "-c", "import socket; u=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                               "[u.sendto(b'x', ('127.0.0.1', p)) for p in range(20000, 23000)]"], timeout=30)
        assert proc.returncode == 0
        tiny.drain()
        stats = tiny.stats()
        assert stats.lost > 0
        assert stats.events + stats.lost >= 3000
    finally:
        tiny.close()


def test_kernels_without_btf_get_the_same_connect_from_the_hash_fallback() -> None:
    """Built with -DNV_NO_BTF (what a kernel without BTF gets), per-thread state lives in a
    hash by thread id: a connect still carries its result and both ports."""
    import struct

    from sensor.bpf_program import SensorProgram

    records: list[bytes] = []
    program = SensorProgram(records.append, ringbuf_pages=64, use_btf=False)
    try:
        assert not program.uses_btf
        srv = _server()
        port = srv.getsockname()[1]
        proc = subprocess.Popen([PY, "-c", f"import socket; socket.create_connection(('127.0.0.1', {port})).close()"])
        assert proc.wait(timeout=20) == 0
        program.consume()
        connects = []
        for raw in records:
            kind, tgid = struct.unpack_from("<II", raw, 16)
            if kind == 4 and tgid == proc.pid:
                ret, _fd, op = struct.unpack_from("<iiI", raw, 56)
                lport, rport = struct.unpack_from("<HH", raw, 84)
                if op == 1:
                    connects.append((ret, lport > 0, rport))
        assert connects == [(0, True, port)]
        srv.close()
    finally:
        program.close()


def test_kernels_without_btf_take_exec_arguments_and_exit_codes_from_syscalls() -> None:
    """Without BTF offsets the program carries the syscall-hook fallback
    (sensor_process_syscalls.c): an exec still has its arguments, an exit its code."""
    import struct

    from sensor.bpf_program import SensorProgram

    records: list[bytes] = []
    program = SensorProgram(records.append, ringbuf_pages=64, use_btf=False)
    try:
        assert program.offsets == {}
        proc = subprocess.Popen(["sh", "-c", "exit 5", "nv-fallback-marker"])
        assert proc.wait(timeout=20) == 5
        program.consume()
        mine = [(struct.unpack_from("<I", raw, 16)[0], raw) for raw in records
                if struct.unpack_from("<I", raw, 20)[0] == proc.pid]
        execs = [raw for kind, raw in mine if kind == 1]
        exits = [raw for kind, raw in mine if kind == 3]
        assert execs and b"nv-fallback-marker" in execs[0]
        assert exits and struct.unpack_from("<i", exits[0], 56)[0] == 5
    finally:
        program.close()
