"""`netvigil observe` and `netvigil status` against the running agent's local API socket."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from live_agent import NETVIGIL, Listener, LiveAgent

RULE = "Test connect to watched port"


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Two python interpreters under their own names: proc.name tells the workloads apart."""
    d = tmp_path_factory.mktemp("bin")
    names = []
    for name in ("nvobs-a", "nvobs-b"):
        (d / name).symlink_to(os.path.realpath(sys.executable))
        names.append(str(d / name))
    return names[0], names[1]


def observe(agent: LiveAgent, *args: str) -> subprocess.Popen:
    return subprocess.Popen([NETVIGIL, "observe", "--socket", str(agent.socket), "-o", "json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def collect(proc: subprocess.Popen, settle: float = 1.5) -> list[dict]:
    time.sleep(settle)
    proc.terminate()
    out, err = proc.communicate(timeout=10)
    assert "Traceback" not in err, err
    return [json.loads(line) for line in out.splitlines()]


def _wait_readers(agent: LiveAgent, n: int) -> None:
    deadline = time.monotonic() + 10
    while agent.metric("netvigil_api_readers") < n:
        assert time.monotonic() < deadline, "observers did not connect"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def workload(live_agent: LiveAgent, programs: tuple[str, str]) -> Iterator[dict]:
    """Observers with different filters, all following at once, then one known workload:
    nvobs-a connects 3 times to the watched port P1, nvobs-b twice to P2."""
    p2 = Listener()
    a, b = programs
    filters = {
        "type+process": ["--type", "connect", "--process", "nvobs-a"],
        "port": ["--port", str(p2.port)],
        "ip+process": ["--ip", "127.0.0.0/8", "--process", "nvobs-b", "--type", "connect"],
        "where": ["--where", f"evt.type = connect and fd.rport = {live_agent.target}"],
        "alerts": ["--alerts"],
        "namespace": ["--namespace", "no-such-namespace"],
        "pod": ["--pod", "shop/cart"],
        "label": ["--label", "app=cart"],
        "verdict": ["--verdict", "deny"],
    }
    procs = {name: observe(live_agent, "--follow", *args) for name, args in filters.items()}
    _wait_readers(live_agent, len(procs))
    live_agent.connects(3, program=a)
    live_agent.connects(2, port=p2.port, program=b)
    time.sleep(1.0)
    out = {name: collect(proc, settle=0.5) for name, proc in procs.items()}
    out["ports"] = (live_agent.target, p2.port)
    yield out
    p2.sock.close()


def _connects(events: list[dict], name: str) -> list[dict]:
    return [e for e in events if e.get("evt.type") == "connect" and e.get("proc.name") == name]


def test_type_and_process_select_exactly_the_workloads_connects(workload: dict) -> None:
    events = workload["type+process"]
    assert len(events) == 3
    assert all(e["evt.type"] == "connect" and e["proc.name"] == "nvobs-a" for e in events)
    assert {e["fd.rport"] for e in events} == {workload["ports"][0]}


def test_port_selects_both_ends_of_p2_and_nothing_else(workload: dict) -> None:
    p2 = workload["ports"][1]
    events = workload["port"]
    assert events and all(p2 in (e.get("fd.lport"), e.get("fd.rport")) for e in events)
    assert len(_connects(events, "nvobs-b")) == 2 and not _connects(events, "nvobs-a")


def test_ip_with_process_and_where_condition(workload: dict) -> None:
    ip = workload["ip+process"]
    assert len(ip) == 2 and all(e["proc.name"] == "nvobs-b" and e["fd.rip"] == "127.0.0.1" for e in ip)
    where = workload["where"]
    assert len(where) == 3 and all(e["proc.name"] == "nvobs-a" for e in where)


def test_alerts_only(workload: dict) -> None:
    alerts = workload["alerts"]
    assert [a["rule"] for a in alerts].count(RULE) == 3
    assert all({"rule", "priority", "output", "output_fields", "uuid", "time"} <= set(a) for a in alerts)


def test_kubernetes_and_verdict_filters_select_nothing_from_a_host_workload(workload: dict) -> None:
    # the workload runs on the host: no pod, namespace or label, no enforcement verdict
    for name in ("namespace", "pod", "label", "verdict"):
        assert workload[name] == [], name


def test_last_n_from_history_without_follow(live_agent: LiveAgent, workload: dict) -> None:
    out = subprocess.run([NETVIGIL, "observe", "--socket", str(live_agent.socket), "-o", "json", "--last", "2",
                          "--type", "connect", "--process", "nvobs-a"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(events) == 2 and all(e["proc.name"] == "nvobs-a" for e in events)
    assert events == workload["type+process"][-2:]
    future = subprocess.run([NETVIGIL, "observe", "--socket", str(live_agent.socket), "-o", "json",
                             "--since", "2999-01-01T00:00:00+00:00"], capture_output=True, text=True, timeout=30)
    assert future.returncode == 0 and future.stdout == ""


def test_compact_and_table_outputs(live_agent: LiveAgent, workload: dict) -> None:
    for fmt, marker in (("compact", "nvobs-a("), ("table", "TIME")):
        out = subprocess.run([NETVIGIL, "observe", "--socket", str(live_agent.socket), "-o", fmt, "--last", "3",
                              "--process", "nvobs-a", "--type", "connect"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and marker in out.stdout, out
        assert "connect" in out.stdout and "{" not in out.stdout


def test_bad_where_is_a_clear_error(live_agent: LiveAgent) -> None:
    out = subprocess.run([NETVIGIL, "observe", "--socket", str(live_agent.socket), "--where", "evt.type = = x"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "--where" in out.stderr and "Traceback" not in out.stderr


def test_status_reports_the_running_agent(live_agent: LiveAgent) -> None:
    out = subprocess.run([NETVIGIL, "status", "--socket", str(live_agent.socket), "--json"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    assert st["healthy"] and st["ready"] and st["programs"]["attached"]
    assert st["rules"]["loaded"] == 2 and st["events"]["lost"] == 0 and st["events"]["by_type"]["connect"] > 0
    assert st["alerts"]["sinks"]["stdout"]["state"] == "ok"
    assert st["enforcement"]["entries"] >= 1
    assert "not used" in st["kubernetes"]["status"] or "status" in st["kubernetes"]
    text = subprocess.run([NETVIGIL, "status", "--socket", str(live_agent.socket)], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "NO_COLOR": "1"})
    assert text.returncode == 0 and "\x1b[" not in text.stdout
    for label in ("Health", "Ready", "Programs", "Rules", "sink stdout", "Kubernetes", "Enforcement", "Events"):
        assert label in text.stdout, text.stdout


def test_a_stalled_reader_does_not_slow_the_agent(live_agent: LiveAgent) -> None:
    n = 1500
    matches0 = live_agent.metric("netvigil_rule_matches_total", rule=RULE, priority="Notice")
    lost0 = live_agent.metric("netvigil_events_lost_total")
    t0 = time.monotonic()
    live_agent.connects(n)
    free_s = time.monotonic() - t0
    assert live_agent.wait_metric("netvigil_rule_matches_total", matches0 + n, rule=RULE,
                                  priority="Notice") == matches0 + n
    # a reader that asks for everything and never reads
    stalled = socket.socket(socket.AF_UNIX)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(str(live_agent.socket))
    stalled.sendall(b'{"op": "observe", "follow": true}\n')
    try:
        _wait_readers(live_agent, 1)
        dropped0 = live_agent.metric("netvigil_api_reader_dropped_total")
        t0 = time.monotonic()
        live_agent.connects(n)
        stalled_s = time.monotonic() - t0
        got = live_agent.wait_metric("netvigil_rule_matches_total", matches0 + 2 * n, rule=RULE, priority="Notice")
        assert got == matches0 + 2 * n      # every event of the second run went through the pipeline too
        assert live_agent.metric("netvigil_events_lost_total") == lost0
        assert live_agent.metric("netvigil_api_reader_dropped_total") > dropped0   # the lag is counted
        assert live_agent.get("/healthz")[0] == 200
        print(f"\n{n} connects: {n / free_s:,.0f}/s without a reader, {n / stalled_s:,.0f}/s with a stalled one")
    finally:
        stalled.close()


def test_socket_refuses_a_non_root_user(live_agent: LiveAgent) -> None:
    assert oct(live_agent.socket.stat().st_mode & 0o777) == "0o600"
    out = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                          NETVIGIL, "status", "--socket", str(live_agent.socket)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "permission denied" in out.stderr, out


ALLOWED_SERVER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from sensor.agent_parts import AgentParts
    from sensor.event_hub import EventHub
    from sensor.health import Heartbeat
    from sensor.local_api import LocalApiServer
    parts = AgentParts(EventHub(), Heartbeat(10))
    parts.readiness.set("programs", True, "attached")
    server = LocalApiServer(parts, Path(sys.argv[1]), group="nogroup")
    server.start()
    print("READY", flush=True)
    sys.stdin.read()
    server.stop()
""")


def test_a_configured_group_may_connect(tmp_path: Path) -> None:
    path = Path(f"/run/netvigil-test-{os.getpid()}-group/netvigil.sock")
    server = subprocess.Popen([sys.executable, "-c", ALLOWED_SERVER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert server.stdout.readline().strip() == "READY"
        assert oct(path.stat().st_mode & 0o777) == "0o660"
        member = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                                 NETVIGIL, "status", "--json", "--socket", str(path)],
                                capture_output=True, text=True, timeout=30)
        assert member.returncode == 0, member.stderr
        assert json.loads(member.stdout)["ready"] is True
        other = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "daemon", "--clear-groups",
                                NETVIGIL, "status", "--socket", str(path)], capture_output=True, text=True, timeout=30)
        assert other.returncode == 2 and "permission denied" in other.stderr
    finally:
        server.stdin.close()
        server.wait(timeout=10)
        subprocess.run(["rm", "-rf", str(path.parent)])
