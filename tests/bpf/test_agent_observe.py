"""`netvigil observe` and `netvigil status` against the running agent's local API socket."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from live_agent import CONNECTS, NETVIGIL, Listener, LiveAgent
from tests.k8s_pods import CRIO, PodHost

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


POD, NAMESPACE, LABELS = "cart-5f6d7-abcde", "shop", {"app": "cart", "tier": "web"}
AUDITED = "192.0.2.77"   # the base rules' static audit entry (on the agent's test cgroup)
VERDICT = """
import os, socket, sys
with open(sys.argv[1], "w") as procs:   # into the agent's enforcement cgroup
    procs.write(str(os.getpid()))
try:
    socket.create_connection((sys.argv[2], 9), timeout=2).close()
except OSError:
    pass   # refused: nothing listens in the test's netns
"""


class Observer:
    """`netvigil observe --follow -o json` with some filter, its lines going to a file."""

    def __init__(self, agent: LiveAgent, out: Path, *args: str) -> None:
        self.out = out
        self.err = out.with_suffix(".err")
        self.proc = subprocess.Popen([NETVIGIL, "observe", "--socket", str(agent.socket), "-o", "json",
                                      "--follow", *args], stdout=out.open("w"), stderr=self.err.open("w"))

    def items(self) -> list[dict]:
        """Every complete line so far, parsed (each must be JSON)."""
        text = self.out.read_text()
        return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines()]

    def stop(self) -> list[dict]:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        err = self.err.read_text()
        assert "Traceback" not in err and "dropped" not in err, err
        return self.items()


def _wait_readers(agent: LiveAgent, n: int) -> None:
    deadline = time.monotonic() + 30
    while agent.metric("netvigil_api_readers") < n:
        assert time.monotonic() < deadline, "observers did not connect"
        time.sleep(0.1)


def _connects(events: list[dict], name: str, port: int | None = None) -> list[dict]:
    return [e for e in events if e.get("evt.type") == "connect" and e.get("proc.name") == name
            and (port is None or e.get("fd.rport") == port)]


def _in_pod(e: dict) -> bool:
    return e.get("k8s.pod.name") == POD and e.get("k8s.ns.name") == NAMESPACE


@pytest.fixture(scope="module")
def workload(live_agent: LiveAgent, programs: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[dict]:
    """Observers with different filters, all following at once, then one known workload:
    nvobs-a connects 3 times to the watched port P1 (3 alerts), nvobs-b twice to P2, the
    CRI-O pod shop/cart-5f6d7-abcde (labels app=cart, tier=web) twice to P3, and a process
    in the agent's enforcement cgroup connects to the audited address (an audit verdict)."""
    p2, p3 = Listener(), Listener()
    a, b = programs
    base = tmp_path_factory.mktemp("observe")
    filters = {
        "type+process": ["--type", "connect", "--process", "nvobs-a"],
        "port": ["--port", str(p2.port)],
        "ip+process": ["--ip", "127.0.0.0/8", "--process", "nvobs-b", "--type", "connect"],
        "where": ["--where", f"evt.type = connect and fd.rport = {live_agent.target}"],
        "alerts": ["--alerts"],
        "events": ["--events", "--process", "nvobs-a"],
        "namespace": ["--namespace", NAMESPACE],
        "pod": ["--pod", f"{NAMESPACE}/{POD}"],
        "pod-name": ["--pod", POD, "--type", "connect"],
        "label": ["--label", "app=cart"],
        "label-key": ["--label", "tier", "--port", str(p3.port)],
        "verdict": ["--verdict", "audit"],
        # nothing of the workload matches these
        "other-namespace": ["--namespace", "other"],
        "pod-other-namespace": ["--pod", f"other/{POD}"],
        "label-other": ["--label", "app=shop"],
        "verdict-deny": ["--verdict", "deny"],
    }
    observers = {name: Observer(live_agent, base / f"{name}.jsonl", *args) for name, args in filters.items()}
    pods = PodHost(live_agent.node_prefix)
    try:
        _wait_readers(live_agent, len(observers))
        ns = pods.netns(f"nvobs{os.getpid()}", [f"{AUDITED}/32"])
        t0 = time.time_ns()
        live_agent.connects(3, program=a)
        live_agent.connects(2, port=p2.port, program=b)
        container = pods.pod(POD, NAMESPACE, labels=LABELS).start(
            ["/usr/bin/python3", "-c", CONNECTS, str(p3.port), "2"], name="cart", runtime=CRIO)
        # nsenter, not `ip netns exec`: that one mounts a sysfs of its own, without the cgroup tree
        verdict = subprocess.run(["nsenter", f"--net=/var/run/netns/{ns}", sys.executable, "-c", VERDICT,
                                  str(live_agent.cgroup / "cgroup.procs"), AUDITED],
                                 capture_output=True, text=True, timeout=60)
        assert verdict.returncode == 0, verdict.stderr
        code, _, err = container.wait(timeout=60)
        assert code == 0, err
        t1 = time.time_ns()
        # poll until what each following observer must show has arrived (never a fixed sleep)
        expected = {
            "type+process": lambda got: len(got) >= 3, "port": lambda got: len(_connects(got, "nvobs-b")) >= 2,
            "ip+process": lambda got: len(got) >= 2, "where": lambda got: len(got) >= 3,
            "alerts": lambda got: [i.get("rule") for i in got].count(RULE) >= 3,
            "events": lambda got: len(_connects(got, "nvobs-a")) >= 3,
            "namespace": lambda got: len(_connects(got, "python3", p3.port)) >= 2,
            "pod": lambda got: len(_connects(got, "python3", p3.port)) >= 2,
            "pod-name": lambda got: len(got) >= 2, "label": lambda got: len(_connects(got, "python3")) >= 2,
            "label-key": lambda got: len(_connects(got, "python3")) >= 2,
            "verdict": lambda got: len(got) >= 1,
        }
        deadline = time.monotonic() + 60
        for name, ready in expected.items():
            while not ready(observers[name].items()):
                assert time.monotonic() < deadline, f"observer {name}: {observers[name].items()[-5:]}"
                time.sleep(0.2)
        # the others had the same items offered: every reader's queue has been sent
        while any(q["queued"] for q in _status(live_agent)["api"]["reader_queues"]):
            assert time.monotonic() < deadline, "reader queues not drained"
            time.sleep(0.2)
        out: dict = {name: obs.stop() for name, obs in observers.items()}
        out["ports"] = (live_agent.target, p2.port, p3.port)
        out["window"] = (t0, t1)
        yield out
    finally:
        for obs in observers.values():
            if obs.proc.poll() is None:
                obs.proc.kill()
                obs.proc.wait()
        pods.close()
        p2.sock.close()
        p3.sock.close()


def _status(agent: LiveAgent) -> dict:
    out = subprocess.run([NETVIGIL, "status", "--socket", str(agent.socket), "--json"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


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


def test_alerts_only_and_events_only(workload: dict) -> None:
    alerts = workload["alerts"]
    assert [a["rule"] for a in alerts].count(RULE) == 3
    assert all({"rule", "priority", "output", "output_fields", "uuid", "time"} <= set(a) for a in alerts)
    events = workload["events"]   # --events --process nvobs-a: its events, none of its 3 alerts
    assert events and all("evt.type" in e and "rule" not in e and e["proc.name"] == "nvobs-a" for e in events)
    assert {"execve", "connect"} <= {e["evt.type"] for e in events}


def test_pod_namespace_and_label_select_exactly_the_pods_events(workload: dict) -> None:
    p3 = workload["ports"][2]
    for name in ("namespace", "pod", "label"):
        events = workload[name]
        assert events and all(_in_pod(e) for e in events), name
        assert len(_connects(events, "python3", p3)) == 2, name
        assert any(e["evt.type"] == "execve" and e["proc.exepath"] == "/usr/bin/python3" for e in events), name
        assert all(e["k8s.pod.labels"] == LABELS for e in events if e["evt.type"] == "connect"), name
    # the same pod's events whichever way it is named (the pod's name alone, a label key)
    assert ({e["evt.num"] for e in workload["namespace"]} == {e["evt.num"] for e in workload["pod"]}
            == {e["evt.num"] for e in workload["label"]})
    assert [e["evt.num"] for e in workload["pod-name"]] == [e["evt.num"] for e in workload["pod"]
                                                            if e["evt.type"] == "connect"]
    assert all(_in_pod(e) and p3 in (e.get("fd.rport"), e.get("fd.lport")) for e in workload["label-key"])
    assert len(_connects(workload["label-key"], "python3", p3)) == 2
    # host processes are not in the pod
    assert not _connects(workload["namespace"], "nvobs-a") and not _connects(workload["pod"], "nvobs-b")


def test_verdict_selects_the_audit_verdict(workload: dict) -> None:
    verdicts = workload["verdict"]
    assert verdicts and all(v["evt.type"] == "netvigil_verdict" and v["netvigil.verdict"] == "audit"
                            for v in verdicts)
    assert any(v.get("fd.rip") == AUDITED and v["netvigil.rule"] == "Test static audit entry" for v in verdicts)


def test_filters_that_the_workload_does_not_match_select_nothing(workload: dict) -> None:
    t0, t1 = workload["window"]
    for name in ("other-namespace", "pod-other-namespace", "label-other", "verdict-deny"):
        assert [i for i in workload[name] if t0 <= i.get("evt.time", 0) <= t1] == [], name


def test_since_selects_by_time(live_agent: LiveAgent, workload: dict) -> None:
    t0, t1 = workload["window"]
    recent = subprocess.run([NETVIGIL, "observe", "--socket", str(live_agent.socket), "-o", "json", "--last", "100",
                             "--since", "10m", "--process", "nvobs-a", "--type", "connect"],
                            capture_output=True, text=True, timeout=30)
    assert recent.returncode == 0, recent.stderr
    assert [json.loads(line)["evt.num"] for line in recent.stdout.splitlines()] == \
        [e["evt.num"] for e in workload["type+process"]]
    after = datetime.fromtimestamp(t1 / 1e9, timezone.utc).isoformat()
    later = subprocess.run([NETVIGIL, "observe", "--socket", str(live_agent.socket), "-o", "json", "--last", "100",
                            "--since", after, "--process", "nvobs-a"], capture_output=True, text=True, timeout=30)
    assert later.returncode == 0 and later.stdout == "", later   # the workload was before that


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
        # ... and shown by status: which reader lags, how far, how much it lost
        lagging = [q for q in _status(live_agent)["api"]["reader_queues"] if q["dropped"]]
        assert len(lagging) == 1 and lagging[0]["name"] == f"observe pid {os.getpid()} uid 0", lagging
        assert lagging[0]["queued"] == lagging[0]["capacity"] == 1024 and lagging[0]["dropped"] > 0
        text = subprocess.run([NETVIGIL, "status", "--socket", str(live_agent.socket)], capture_output=True,
                              text=True, timeout=30, env={**os.environ, "NO_COLOR": "1"}).stdout
        assert re.search(rf"observe pid {os.getpid()} uid 0\s+1,024/1,024 queued, [\d,]+ dropped", text), text
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
