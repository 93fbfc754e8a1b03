"""`netvigil run` as a person sees it: the live view on a terminal (tmux), JSON lines on a pipe.

A shipped rule (Reverse Shell Command Line, Critical) is triggered harmlessly: a shell whose
command line names /dev/tcp/127.0.0.1/9 but opens nothing.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

NETVIGIL = str(Path(sys.executable).with_name("netvigil"))
RULE = "Reverse Shell Command Line"
TRIGGER = ["sh", "-c", "true /dev/tcp/127.0.0.1/9"]
RUN = [NETVIGIL, "run", "--no-enforce", "--no-record", "--duration", "15"]
SGR = re.compile(r"\x1b\[[0-9;]*m")


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def _wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_live_view_on_a_terminal_shows_figures_and_the_alert_without_colour_under_no_color(
        tmp_path: Path) -> None:
    session = f"nvtest{os.getpid()}"
    err = tmp_path / "stderr"
    command = f"NO_COLOR=1 {shlex.join(RUN)} 2>{err}; sleep 30"
    _tmux("new-session", "-d", "-s", session, "-x", "180", "-y", "40", command)
    time.sleep(0)
    try:
        _wait_for(lambda: "events/s" in _tmux("capture-pane", "-p", "-t", session), 60, "the view")
        def alert_shown() -> str | None:
            subprocess.run(TRIGGER, check=True)
            pane = _tmux("capture-pane", "-p", "-t", session)
            return pane if RULE in pane else None

        pane = _wait_for(alert_shown, 10, "the alert row")
        raw = _tmux("capture-pane", "-p", "-e", "-t", session)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    lines = pane.splitlines()
    header = next(line for line in lines if "events/s" in line)
    figures = dict(re.findall(r"(events/s|events|lost|processes) ([\d,]+)", header))
    assert int(figures["events"].replace(",", "")) > 0 and figures["lost"] == "0"
    assert any(line.strip("│ ").startswith("alerts Critical ") for line in lines), pane
    row = next(line for line in lines if RULE in line)
    assert re.match(r"\d\d:\d\d:\d\d\.\d{3}\s+Critical\s+" + RULE, row), row
    assert " - " in row  # namespace and pod: not known for a host process
    assert "sensor running" in err.read_text()
    assert not SGR.search(raw), "NO_COLOR: no colour or style codes on the screen"


def test_piped_output_is_json_lines_only_with_the_alert() -> None:
    proc = subprocess.Popen([*RUN[:-1], "6"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stderr is not None
    assert "sensor running" in proc.stderr.readline()
    subprocess.run(TRIGGER, check=True)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "\x1b" not in out
    alerts = [json.loads(line) for line in out.splitlines()]  # every line is JSON
    assert any(a["rule"] == RULE and a["priority"] == "Critical" for a in alerts), out
