"""sensor.fold_repeats: repeats of a network event are counted in the kernel, not sent.

Real programs on both hook sets, real loopback connections from this process. The fold
period is long (60 s) so nothing is collected behind the test's back: each test ends
the period itself with `deliver_repeats()`, as the agent's poll loop does once a period.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rules.loader import load_rules_text
from tests.bpf.conftest import LiveSensor, loaded_sensor

PERIOD_S = 60.0
PID = os.getpid()
NETVIGIL = str(Path(sys.executable).with_name("netvigil"))


@pytest.fixture(scope="module", params=["cgroup", "syscalls"])
def folding(request: pytest.FixtureRequest) -> Iterator[LiveSensor]:
    with loaded_sensor(request.param, fold_repeats_s=PERIOD_S) as live:
        yield live


def _fresh(live: LiveSensor) -> None:
    """Start a fold period: earlier counts collected, earlier events dropped."""
    live.sensor.deliver_repeats()
    live.clear()


class _Server:
    """A loopback TCP listener that accepts and closes every connection."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.close()
            self.accepted += 1

    def close(self) -> None:
        self.sock.close()


def _connect(port: int) -> None:
    with socket.socket() as c:
        try:
            c.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            pass


def _closed_ports(n: int) -> list[int]:
    """Loopback ports nothing listens on (bound once, then released)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _of(live: LiveSensor, types: tuple[str, ...], port_field: str, port: int) -> list[dict]:
    return [e for e in live.events if e.get("proc.pid") == PID and e.get("evt.type") in types
            and e.get(port_field) == port]


def test_repeated_connections_are_one_event_and_one_summary(folding: LiveSensor) -> None:
    _fresh(folding)
    server = _Server()
    try:
        for _ in range(30):
            _connect(server.port)
        folding.wait_for(lambda e: e.get("evt.type") in ("accept", "accept4")
                         and e.get("fd.lport") == server.port)
        while server.accepted < 30:
            folding.sensor.poll(20)
        folding.sensor.deliver_repeats()
    finally:
        server.close()
    for types, port_field in ((("connect",), "fd.rport"), (("accept", "accept4"), "fd.lport")):
        seen = _of(folding, types, port_field, server.port)
        assert len(seen) == 2, seen   # the first one, then the period's summary
        first, summary = seen
        assert "evt.repeats" not in first and first["evt.res"] == "SUCCESS"
        assert summary["evt.repeats"] == 29 and summary["evt.time"] >= first["evt.time"]
        assert summary["proc.exepath"] == first["proc.exepath"] and summary["fd.rip"] == "127.0.0.1"
    assert folding.sensor.repeats_folded >= 58


def test_other_ports_and_other_results_are_not_folded_together(folding: LiveSensor) -> None:
    _fresh(folding)
    ports = _closed_ports(5)
    server = _Server()
    try:
        for port in ports:
            _connect(port)
        for _ in range(3):
            _connect(server.port)
            _connect(ports[0])
        folding.wait_for(lambda e: e.get("fd.rport") == server.port)
        folding.sensor.drain()
        folding.sensor.deliver_repeats()
    finally:
        server.close()
    refused = {p: _of(folding, ("connect",), "fd.rport", p) for p in ports}
    assert all(len(evs) == 1 and evs[0]["evt.res"] == "ECONNREFUSED" for p, evs in refused.items()
               if p != ports[0]), refused
    first, summary = refused[ports[0]]
    assert summary["evt.repeats"] == 3 and summary["evt.res"] == "ECONNREFUSED"
    ok = _of(folding, ("connect",), "fd.rport", server.port)
    assert [e.get("evt.repeats") for e in ok] == [None, 2] and ok[1]["evt.res"] == "SUCCESS"


def test_a_rule_can_ask_how_many_repeats_a_summary_stands_for(folding: LiveSensor) -> None:
    ruleset = load_rules_text("""
- rule: Connection flood
  desc: one process connecting to the same place over and over
  condition: evt.type = connect and evt.repeats >= 20
  output: "%proc.name connected %evt.repeats more times to %fd.rip:%fd.rport"
  priority: WARNING
""")
    _fresh(folding)
    ports = _closed_ports(1)
    for _ in range(25):
        _connect(ports[0])
    folding.wait_for(lambda e: e.get("fd.rport") == ports[0])
    folding.sensor.drain()
    folding.sensor.deliver_repeats()
    first, summary = _of(folding, ("connect",), "fd.rport", ports[0])
    assert not list(ruleset.evaluate(first))
    (match,) = ruleset.evaluate(summary)
    assert match.output.endswith(f"connected 24 more times to 127.0.0.1:{ports[0]}")


def test_a_full_fold_map_sends_every_event_of_the_keys_it_has_no_room_for() -> None:
    with loaded_sensor("cgroup", fold_repeats_s=PERIOD_S, fold_entries=4) as live:
        _fresh(live)
        ports = _closed_ports(8)
        for _ in range(5):
            for port in ports:
                _connect(port)
        live.wait_for_all(lambda e: e.get("proc.pid") == PID and e.get("fd.rport") in ports, 8)
        live.sensor.drain()
        live.sensor.deliver_repeats()
    per_port = {p: _of(live, ("connect",), "fd.rport", p) for p in ports}
    # every connect is accounted for: sent, or counted in a summary
    assert all(sum(e.get("evt.repeats", 1) for e in evs) == 5 for evs in per_port.values()), per_port
    assert sum(1 for evs in per_port.values() if len(evs) == 5) >= 4   # no room: all sent


FLOOD_RULE = """
- rule: Connection flood
  desc: one process connecting to the same place over and over
  condition: evt.type = connect and evt.repeats >= 10
  output: "%proc.name connected %evt.repeats more times to %fd.rip:%fd.rport"
  priority: WARNING
"""
FLOOD = """
import socket, sys
for _ in range(20):
    with socket.socket() as c:
        try:
            c.connect(('127.0.0.1', int(sys.argv[1])))
        except ConnectionRefusedError:
            pass
"""


def test_the_agent_folds_alerts_on_and_records_the_summary(tmp_path: Path) -> None:
    """`netvigil run` as configured by default (sensor.fold_repeats 1s): the flood's
    summary alerts live, is in the recording, and replays to the same alert."""
    config, rules, record = tmp_path / "nv.yaml", tmp_path / "flood.yaml", tmp_path / "rec"
    config.write_text("sensor: {}\n")   # the default fold period
    rules.write_text(FLOOD_RULE)
    agent = subprocess.Popen(
        [NETVIGIL, "run", "--config", str(config), "--rules", str(rules), "--json", "--no-enforce",
         "--record", str(record), "--duration", "60", "--alert-set", "noise.aggregate.enabled=false",
         "--alert-set", "noise.rate_limit.enabled=false"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert agent.stderr is not None
        banner = agent.stderr.readline()
        assert "sensor running" in banner and "repeats folded every 1s" in banner, banner
        (port,) = _closed_ports(1)
        subprocess.run([sys.executable, "-c", FLOOD, str(port)], check=True, timeout=30)
        time.sleep(2.5)   # past the end of the fold period, and the recorder's 1 s flush
    finally:
        agent.send_signal(signal.SIGTERM)
        out, err = agent.communicate(timeout=60)
    assert agent.returncode == 0, err
    assert re.search(r"repeats_folded=([1-9]\d*)", err), err[-2000:]

    def floods(stdout: str) -> list[dict]:
        alerts = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        return [a for a in alerts if a["rule"] == "Connection flood" and a["output_fields"]["fd.rport"] == port]

    (live,) = floods(out)
    assert live["output_fields"]["evt.repeats"] == 19 and "connected 19 more times" in live["output"]
    replay = subprocess.run([NETVIGIL, "replay", str(record), "--json", "--rules", str(rules)],
                            capture_output=True, text=True, timeout=120)
    assert replay.returncode == 0, replay.stderr
    (replayed,) = floods(replay.stdout)
    fields = {k: v for k, v in live["output_fields"].items() if k != "netvigil.alert_id"}
    assert {k: v for k, v in replayed["output_fields"].items() if k != "netvigil.alert_id"} == fields
    assert replayed["time"] == live["time"]


def test_fold_repeats_0_sends_every_event(tmp_path: Path) -> None:
    """`sensor.fold_repeats: 0`: nothing is folded, each of the flood's connects alerts."""
    config, rules = tmp_path / "nv.yaml", tmp_path / "each.yaml"
    config.write_text("sensor:\n  fold_repeats: 0\n")
    (port,) = _closed_ports(1)
    rules.write_text(f"""
- rule: Each connect
  desc: every connect to the test's closed port
  condition: evt.type = connect and fd.rport = {port}
  output: "%proc.name connected to %fd.rip:%fd.rport"
  priority: NOTICE
""")
    agent = subprocess.Popen(
        [NETVIGIL, "run", "--config", str(config), "--rules", str(rules), "--json", "--no-enforce",
         "--no-record", "--duration", "60", "--alert-set", "noise.aggregate.enabled=false",
         "--alert-set", "noise.rate_limit.enabled=false"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert agent.stderr is not None
        banner = agent.stderr.readline()
        assert "sensor running" in banner and "repeats folded" not in banner, banner
        subprocess.run([sys.executable, "-c", FLOOD, str(port)], check=True, timeout=30)
        time.sleep(1.5)
    finally:
        agent.send_signal(signal.SIGTERM)
        out, err = agent.communicate(timeout=60)
    assert agent.returncode == 0, err
    alerts = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    each = [a for a in alerts if a["rule"] == "Each connect"]
    assert len(each) == 20 and not any("evt.repeats" in a["output_fields"] for a in each)
    assert "repeats_folded" not in err, err[-2000:]
