"""`netvigil run` and `netvigil observe --follow` as a person sees them, in tmux panes.

Two agents run in 200x50 panes of a private tmux server: one draws the live view on its
terminal (with NO_COLOR=1), one has its stdout piped to a file (the header alone is drawn
on its terminal stderr, in colour). Three `observe --follow` read the first agent's
socket: a table in colour, alerts only under NO_COLOR=1, and one piped to a file. The
known workload: a CRI-O pod `shop/cart-7d9f4-x2xkp` (a runc container) connects three
times to port P (a Critical rule), a host process twice to port Q (a Warning rule).
What the panes show is read with `tmux capture-pane` (-e for the escape codes), polling
until what is expected appears: never fixed sleeps.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from live_agent import CONNECTS, NETVIGIL, Listener, free_port
from tests.k8s_pods import CRIO, PodHost
from tmux_panes import ESCAPE, TmuxScreen

PID = os.getpid()
POD, NAMESPACE = "cart-7d9f4-x2xkp", "shop"
POD_RULE, HOST_RULE = "Terminal test pod connect", "Terminal test host connect"
POD_CONNECTS, HOST_CONNECTS = 3, 2
#: The host process's name: rich markup and an escape code (reverse video), which a view
#: must show as text, not obey (a comm holds up to 15 bytes).
ODD_NAME = "py[red]\x1b[7m"
ODD_SHOWN = "py[red]\\x1b[7m"
START_S = 120.0   # BCC compiles at start: seconds when alone, more on a loaded machine
SHOW_S = 60.0
RULES = """
- rule: {pod_rule}
  desc: the pod of the terminal tests connects to its port
  condition: evt.type = connect and fd.rport = {pod_port}
  output: "pod connect to %fd.rip:%fd.rport by %proc.name"
  priority: CRITICAL
- rule: {host_rule}
  desc: a host process of the terminal tests connects to its port
  condition: evt.type = connect and fd.rport = {host_port}
  output: "host connect to %fd.rip:%fd.rport by %proc.name"
  priority: WARNING
"""


@dataclass
class Screens:
    """What the panes showed once the workload's alerts were on screen, and after Ctrl-C."""

    shown: dict[str, str] = field(default_factory=dict)        # plain text
    escapes: dict[str, str] = field(default_factory=dict)      # with colour/attribute codes
    stopped: dict[str, str] = field(default_factory=dict)      # after Ctrl-C
    run_piped: Path = Path()
    observe_piped: Path = Path()
    pod_port: int = 0
    host_port: int = 0


def _rows(text: str, rule: str) -> list[str]:
    return [line for line in text.splitlines() if rule in line]


def _readers(sock: Path) -> int:
    out = subprocess.run([NETVIGIL, "status", "--json", "--socket", str(sock)], capture_output=True,
                         text=True, timeout=30)
    return json.loads(out.stdout)["api"]["readers"] if out.stdout.strip() else -1


def _write_config(path: Path, base: Path, rules: Path, prefix: Path, sinks: dict) -> Path:
    cfg = {"rules": {"paths": [str(rules)]},
           "alerts": {"spool_dir": str(base / f"spool-{path.stem}"), "sinks": sinks},
           "kubernetes": {"enabled": False, "runtime_prefix": str(prefix)},
           "log": {"level": "info"},
           "sensor": {"fold_repeats": 0}}   # the views count each connect (folding: test_fold_repeats.py)
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def screens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Screens]:
    base = tmp_path_factory.mktemp("terminal")
    pod_listener, host_listener = Listener(), Listener()
    rules = base / "rules.yaml"
    rules.write_text(textwrap.dedent(RULES).format(pod_rule=POD_RULE, host_rule=HOST_RULE,
                                                   pod_port=pod_listener.port, host_port=host_listener.port))
    prefix = base / "node"
    api = Path(f"/run/netvigil-test-{PID}-terminal/netvigil.sock")
    sinks = {"alerts-file": {"type": "file", "path": str(base / "alerts.jsonl")},
             "hook": {"type": "webhook", "url": f"http://127.0.0.1:{free_port()}/alerts"}}  # nothing listens
    live_cfg = _write_config(base / "live.json", base, rules, prefix, sinks)
    piped_cfg = _write_config(base / "piped.json", base, rules, prefix, {})
    common = ["--no-record", "--no-enforce", "--no-http"]
    out = Screens(run_piped=base / "run.jsonl", observe_piped=base / "observe.jsonl",
                  pod_port=pod_listener.port, host_port=host_listener.port)
    screen = TmuxScreen("terminal")
    pods = PodHost(prefix)
    try:
        screen.run("run", [NETVIGIL, "run", "--config", str(live_cfg), *common, "--api-socket", str(api)],
                   env={"NO_COLOR": "1"})
        screen.run("piped", [NETVIGIL, "run", "--config", str(piped_cfg), *common, "--no-api"],
                   stdout=str(out.run_piped))
        for window in ("run", "piped"):
            screen.wait_for(window, lambda t: "events/s" in t, "live view header", timeout=START_S)
        follow = [NETVIGIL, "observe", "--follow", "--socket", str(api)]
        screen.run("observe", [*follow, "--namespace", NAMESPACE])
        screen.run("observe-alerts", [*follow, "--alerts"], env={"NO_COLOR": "1"})
        screen.run("observe-piped", follow, stdout=str(out.observe_piped))
        _wait(lambda: _readers(api) == 3, "three observers connected to the agent")

        container = pods.pod(POD, NAMESPACE, labels={"app": "cart"}).start(
            ["/usr/bin/python3", "-c", CONNECTS, str(pod_listener.port), str(POD_CONNECTS)], name="cart",
            runtime=CRIO)
        odd = base / ODD_NAME
        odd.symlink_to(os.path.realpath(sys.executable))
        subprocess.run([str(odd), "-c", CONNECTS, str(host_listener.port), str(HOST_CONNECTS)],
                       check=True, timeout=60)
        code, _, err = container.wait(timeout=60)
        assert code == 0, err

        def all_alerts(text: str) -> bool:
            return (len(_rows(text, POD_RULE)) == POD_CONNECTS and len(_rows(text, HOST_RULE)) == HOST_CONNECTS
                    and "hook FAILING" in text and "alerts-file ok" in text)

        def header_counts(text: str) -> bool:
            return f"Critical {POD_CONNECTS}" in text and f"Warning {HOST_CONNECTS}" in text

        def pod_rows(text: str) -> bool:
            return len(_rows(text, POD_RULE)) == POD_CONNECTS and len(_rows(text, " connect ")) >= POD_CONNECTS

        waits = {"run": (all_alerts, "the workload's alert rows and sink health"),
                 "piped": (header_counts, "alert counts in the header"),
                 "observe": (pod_rows, "the pod's connects and alerts"),
                 "observe-alerts": (lambda t: len(_rows(t, POD_RULE)) == POD_CONNECTS
                                    and len(_rows(t, HOST_RULE)) == HOST_CONNECTS, "the workload's alerts")}
        for window, (ready, what) in waits.items():
            out.shown[window] = screen.wait_for(window, ready, what, timeout=SHOW_S, history=window != "run")
            out.escapes[window] = screen.capture(window, escapes=True, history=window != "run")
        for window in ("run", "piped", "observe", "observe-alerts", "observe-piped"):
            screen.keys(window, "C-c")   # as a person stops them
        for window in ("run", "piped", "observe", "observe-alerts", "observe-piped"):
            screen.wait_exit(window, timeout=SHOW_S)
            out.stopped[window] = screen.capture(window, history=True)
        for kind in ("shown", "escapes", "stopped"):   # what the panes showed, for a person to look at
            for window, text in getattr(out, kind).items():
                (base / f"pane-{window}-{kind}.txt").write_text(text)
        yield out
    finally:
        screen.close()
        pods.close()
        pod_listener.sock.close()
        host_listener.sock.close()
        shutil.rmtree(api.parent, ignore_errors=True)


def _wait(pred: Callable[[], bool], what: str, timeout: float = SHOW_S) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def _figure(text: str, label: str) -> int:
    m = re.search(rf"(?<![\w/]){re.escape(label)} ([\d,]+)", text)
    assert m, f"no '{label} N' on screen:\n{text}"
    return int(m.group(1).replace(",", ""))


def test_live_view_header_shows_rates_losses_alerts_by_priority_and_sink_health(screens: Screens) -> None:
    pane = screens.shown["run"]
    assert _figure(pane, "events") > 0 and _figure(pane, "processes") > 0
    assert _figure(pane, "events/s") >= 0 and _figure(pane, "lost") == 0
    alerts = next(line for line in pane.splitlines() if "alerts " in line and "Critical" in line)
    # by priority, most severe first
    assert re.search(rf"alerts Critical {POD_CONNECTS}\s+Warning {HOST_CONNECTS}\b", alerts), alerts
    sinks = next(line for line in pane.splitlines() if "sinks " in line)
    assert re.search(r"alerts-file ok \d+ sent", sinks) and re.search(r"hook FAILING 0 sent", sinks), sinks


def test_live_view_alert_rows_show_priority_rule_namespace_and_pod(screens: Screens) -> None:
    pane = screens.shown["run"]
    header = next(line for line in pane.splitlines() if "PRIORITY" in line)
    assert re.search(r"TIME\s+PRIORITY\s+RULE\s+NAMESPACE\s+POD\s+OUTPUT", header), header
    for row in _rows(pane, POD_RULE):
        assert re.search(rf"\d\d:\d\d:\d\d\.\d{{3}}\s+Critical\s+{POD_RULE}\s+{NAMESPACE}\s+{POD}\s+"
                         rf"pod connect to 127\.0\.0\.1:{screens.pod_port} by python3", row), row
    for row in _rows(pane, HOST_RULE):   # a host process: no namespace, no pod
        assert re.search(rf"Warning\s+{HOST_RULE}\s+-\s+-\s+host connect to 127\.0\.0\.1:{screens.host_port} "
                         rf"by {re.escape(ODD_SHOWN)}$", row.rstrip()), row


def test_no_color_leaves_no_escape_codes_and_colour_is_there_without_it(screens: Screens) -> None:
    assert not ESCAPE.search(screens.escapes["run"]), "NO_COLOR: the live view has escape codes"
    assert not ESCAPE.search(screens.escapes["observe-alerts"]), "NO_COLOR: observe has escape codes"
    # the same views without NO_COLOR are coloured: the check above can fail
    assert ESCAPE.search(screens.escapes["piped"]) and ESCAPE.search(screens.escapes["observe"])
    critical = next(line for line in screens.escapes["observe"].splitlines() if POD_RULE in line)
    assert ESCAPE.search(critical.split("ALERT")[0] + "ALERT"), "the ALERT cell is coloured"


def test_piped_run_writes_json_lines_only_and_draws_the_header_on_the_terminal(screens: Screens) -> None:
    lines = screens.run_piped.read_text().splitlines()
    alerts = [json.loads(line) for line in lines]   # every line is JSON
    assert "\x1b" not in screens.run_piped.read_text()
    pod = [a for a in alerts if a["rule"] == POD_RULE]
    assert pod and all(a["priority"] == "Critical" for a in pod)
    assert pod[0]["output_fields"]["k8s.ns.name"] == NAMESPACE and pod[0]["output_fields"]["k8s.pod.name"] == POD
    assert any(a["rule"] == HOST_RULE for a in alerts)
    pane = screens.shown["piped"]
    assert "events/s" in pane and "{" not in pane   # the header on the terminal, no JSON there


def test_observe_table_shows_the_pods_events_and_alerts_with_namespace_and_pod(screens: Screens) -> None:
    pane = screens.shown["observe"]
    header = next(line for line in pane.splitlines() if "DETAIL" in line)
    assert re.search(r"TIME\s+EVENT\s+PID\s+PROCESS\s+NAMESPACE\s+POD\s+CONTAINER\s+DETAIL", header), header
    rows = [line for line in pane.splitlines() if re.match(r"\d\d:\d\d:\d\d\.\d{3} ", line)]
    assert rows and all(f" {NAMESPACE} " in r and f" {POD} " in r for r in rows), "--namespace shop only"
    connects = [r for r in rows if re.search(r"\sconnect\s", r)]
    assert len(connects) >= POD_CONNECTS
    assert all(f"127.0.0.1:{screens.pod_port}" in r for r in connects)
    alerts = _rows(pane, POD_RULE)
    for row in alerts:
        assert re.search(rf"ALERT\s+\d+\s+\S+\s+{NAMESPACE}\s+{POD}\s+[0-9a-f]{{12}}\s+Critical {POD_RULE}: "
                         rf"pod connect to 127\.0\.0\.1:{screens.pod_port}", row), row


def test_observe_alerts_only_and_piped_observe_is_json_lines(screens: Screens) -> None:
    pane = screens.shown["observe-alerts"]
    rows = [line for line in pane.splitlines() if re.match(r"\d\d:\d\d:\d\d\.\d{3} ", line)]
    assert rows and all("ALERT" in r for r in rows)
    assert all(re.search(rf"Critical {POD_RULE}:", r) for r in _rows(pane, POD_RULE))
    for row in _rows(pane, HOST_RULE):   # the odd name is shown as text, in its column and the output
        assert re.search(rf"ALERT\s+\d+\s+{re.escape(ODD_SHOWN)}\s+-\s+-\s+host\s+Warning {HOST_RULE}: "
                         rf"host connect to 127\.0\.0\.1:{screens.host_port} by {re.escape(ODD_SHOWN)}$",
                         row.rstrip()), row
    text = screens.observe_piped.read_text()
    items = [json.loads(line) for line in text.splitlines()]   # every line is JSON
    alerts = [i for i in items if "rule" in i]
    events = [i for i in items if "evt.type" in i]
    assert [a["rule"] for a in alerts].count(POD_RULE) == POD_CONNECTS
    assert [a["rule"] for a in alerts].count(HOST_RULE) == HOST_CONNECTS
    pod_connects = [e for e in events if e["evt.type"] == "connect" and e.get("fd.rport") == screens.pod_port]
    assert len(pod_connects) == POD_CONNECTS
    assert all(e["k8s.ns.name"] == NAMESPACE and e["k8s.pod.name"] == POD for e in pod_connects)
    assert all(e["k8s.pod.labels"] == {"app": "cart"} for e in pod_connects)
    assert {a["output_fields"]["proc.name"] for a in alerts if a["rule"] == HOST_RULE} == {ODD_NAME}


def test_ctrl_c_stops_cleanly_with_a_summary_and_no_traceback(screens: Screens) -> None:
    for window, text in screens.stopped.items():
        assert "Traceback" not in text, f"{window}:\n{text}"
    run = screens.stopped["run"]
    assert run.count("╭─ netvigil") == 1, f"one view, redrawn in place (no broken copies):\n{run}"
    assert re.search(r"netvigil: stopped: events=\d+ lost=0", run), run
    assert run.index("netvigil: stopped") > run.index("latest alerts"), "the summary comes below the view"
    assert re.search(r"alerts-file\s+file\s+stopped", run) and re.search(r"hook\s+webhook", run), run
    # the header-only view on the piped run's terminal goes away without a trace
    assert "╭─ netvigil" not in screens.stopped["piped"], screens.stopped["piped"]
    assert re.search(r"netvigil: stopped: events=\d+ lost=0", screens.stopped["piped"])
    # the piped run's file stays JSON lines to its end
    for line in screens.run_piped.read_text().splitlines():
        json.loads(line)
