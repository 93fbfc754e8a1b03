"""Record a live session with the real sensor, replay it, and get the same alerts."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from rules import DEFAULT_RULES_DIR

NETVIGIL = str(Path(sys.executable).with_name("netvigil"))
RULES_DIR = str(DEFAULT_RULES_DIR)

WORKLOAD = """
import socket, subprocess, sys
srv = socket.socket(); srv.bind(('0.0.0.0', 0)); srv.listen()  # reachable: a loopback dev server is not alerted
port = srv.getsockname()[1]
subprocess.run([sys.executable, '-c', f"import socket; socket.create_connection(('127.0.0.1', {port})).close()"])
srv.accept()[0].close()
print(port, flush=True)
"""


def _alerts(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _key(alert: dict) -> tuple:
    f = alert["output_fields"]
    return alert["rule"], alert["time"], f.get("proc.pid"), f.get("fd.lport"), f.get("fd.sport")


def test_live_alerts_equal_replayed_alerts_and_a_new_rule_adds_one(tmp_path: Path) -> None:
    record = tmp_path / "rec"
    live = subprocess.Popen(
        [NETVIGIL, "run", "--json", "--no-enforce", "--record", str(record), "--duration", "60",
         "--alert-set", "noise.aggregate.enabled=false", "--alert-set", "noise.rate_limit.enabled=false"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert live.stderr is not None
        banner = live.stderr.readline()
        assert "sensor running" in banner, banner
        script = tmp_path / "workload.py"
        script.write_text(WORKLOAD)
        workload = subprocess.run(["sh", "-c", f"{sys.executable} {script}; true"],
                                  capture_output=True, text=True, timeout=30, check=True)
        port = int(workload.stdout)
        time.sleep(1.5)  # more than the recorder's 1 s flush interval
    finally:
        live.send_signal(signal.SIGTERM)
        out, err = live.communicate(timeout=60)
    assert live.returncode == 0, err
    live_alerts = _alerts(out)
    ours = [a for a in live_alerts if a["rule"] == "Interpreter Opened a Listening Socket"
            and a["output_fields"].get("fd.lport") == port]
    assert ours, f"the python listener on {port} should alert live: {[a['rule'] for a in live_alerts]}"

    replay = subprocess.run([NETVIGIL, "replay", str(record), "--json"], capture_output=True, text=True,
                            timeout=120)
    assert replay.returncode == 0, replay.stderr
    assert sorted(map(_key, _alerts(replay.stdout))) == sorted(map(_key, live_alerts))

    extra = tmp_path / "extra.yaml"
    extra.write_text(textwrap.dedent(f"""
        - rule: Connection to the test listener
          desc: a rule written after the incident
          condition: evt.type = connect and fd.sport = {port}
          output: "%proc.cmdline connected to %fd.name (parent %proc.pname)"
          priority: NOTICE
    """))
    again = subprocess.run([NETVIGIL, "replay", str(record), "--json", "--rules", RULES_DIR,
                            "--rules", str(extra)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    new = [a for a in _alerts(again.stdout) if a["rule"] == "Connection to the test listener"]
    assert len(new) == 1 and new[0]["output_fields"]["proc.pname"] == "python"
    assert len(_alerts(again.stdout)) == len(live_alerts) + 1
