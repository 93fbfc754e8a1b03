"""Reload under a running agent: ConfigMap `..data` swaps, SIGHUP, a broken ruleset refused."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from live_agent import NETVIGIL, LiveAgent

BASE_RULE = "Test connect to watched port"
NEW_RULE = """
- rule: Test rule added by a reload
  desc: arrives through a ConfigMap update
  condition: evt.type = connect and fd.rport = {port}
  output: "reloaded rule saw %proc.name"
  priority: CRITICAL
"""
BROKEN = """
- rule: Broken rule
  desc: does not compile
  condition: evt.type = connect and fd.rport = = 1
  output: "x"
  priority: WARNING
"""


@pytest.fixture
def agent(live_agent: LiveAgent) -> Iterator[LiveAgent]:
    """The shared agent, put back to its base rules and config afterwards."""
    yield live_agent
    reloads = live_agent.metric("netvigil_reloads_total")
    live_agent.rules_dir.publish({"rules.yaml": live_agent.base_rules()})
    live_agent.config_dir.publish({"config.yaml": live_agent.config_text()})
    _wait_reloads(live_agent, reloads + 1)
    assert live_agent.metric("netvigil_rules_loaded") == 2


def _wait_reloads(agent: LiveAgent, count: float, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while agent.metric("netvigil_reloads_total") < count:
        assert time.monotonic() < deadline, agent.stderr_path.read_text()[-3000:]
        time.sleep(0.2)


def _entries(agent: LiveAgent) -> set[tuple[str, str]]:
    out = subprocess.run([NETVIGIL, "enforce", "--pin-path", str(agent.pin_path), "list", "--json"],
                         capture_output=True, text=True, check=True).stdout
    return {(e["rule"], e["cidr"]) for e in map(json.loads, out.splitlines())}


def test_configmap_swap_adds_a_rule_that_fires_without_restart(agent: LiveAgent) -> None:
    pid = agent.proc.pid
    reloads = agent.metric("netvigil_reloads_total")
    agent.rules_dir.publish({"rules.yaml": agent.base_rules() + NEW_RULE.format(port=agent.target)})
    _wait_reloads(agent, reloads + 1)
    assert agent.metric("netvigil_rules_loaded") == 3
    agent.connects(4)
    got = agent.wait_metric("netvigil_rule_matches_total", 4, rule="Test rule added by a reload",
                            priority="Critical")
    assert got == 4 and agent.proc.pid == pid and agent.proc.poll() is None
    assert agent.metric("netvigil_reload_last_success") == 1


def test_broken_ruleset_is_refused_and_the_old_rules_keep_firing(agent: LiveAgent) -> None:
    failures = agent.metric("netvigil_reload_failures_total")
    text = agent.base_rules() + BROKEN
    line = next(n for n, t in enumerate(text.splitlines(), 1) if "= = 1" in t)
    agent.rules_dir.publish({"rules.yaml": text})
    deadline = time.monotonic() + 15
    while agent.metric("netvigil_reload_failures_total") <= failures:
        assert time.monotonic() < deadline, "the broken ruleset was not refused"
        time.sleep(0.2)
    assert agent.metric("netvigil_reload_last_success") == 0
    assert agent.metric("netvigil_rules_loaded") == 2
    refused = [r for r in agent.log_records() if r["level"] == "error" and "refused" in r["msg"]]
    assert refused and f"rules.yaml:{line}:" in refused[-1]["msg"]  # file:line of the broken condition
    before = agent.metric("netvigil_rule_matches_total", rule=BASE_RULE, priority="Notice")
    agent.connects(3)
    assert agent.wait_metric("netvigil_rule_matches_total", before + 3, rule=BASE_RULE,
                             priority="Notice") == before + 3


def test_sighup_reloads_and_enforcement_entries_survive(agent: LiveAgent) -> None:
    subprocess.run([NETVIGIL, "enforce", "--pin-path", str(agent.pin_path), "block", "--cidr", "192.0.2.88/32",
                    "--cgroup", f"/{agent.cgroup.name}", "--mode", "audit", "--rule", "operator"],
                   check=True, capture_output=True)
    entries = _entries(agent)
    assert {("Test static audit entry", "192.0.2.77/32"), ("operator", "192.0.2.88/32")} <= entries
    reloads = agent.metric("netvigil_reloads_total")
    # rules without the static rule, delivered by SIGHUP (file watching would see it too)
    agent.rules_dir.publish({"rules.yaml": agent.base_rules().split("- rule: Test static")[0]})
    agent.proc.send_signal(signal.SIGHUP)
    _wait_reloads(agent, reloads + 1)
    # a reload the file watcher started for an earlier change may be the one counted:
    # wait for the one that loads the new file
    deadline = time.monotonic() + 15
    while agent.metric("netvigil_rules_loaded") != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert agent.metric("netvigil_rules_loaded") == 1
    assert _entries(agent) == entries  # reload touches no enforcement entry


def test_changed_sinks_are_rebuilt_and_take_the_next_alerts(agent: LiveAgent) -> None:
    extra = agent.base / "reloaded-alerts.jsonl"
    reloads = agent.metric("netvigil_reloads_total")
    sinks = {"stdout": {"type": "stdout", "format": "json"}, "file": {"type": "file", "path": str(extra)}}
    agent.config_dir.publish({"config.yaml": agent.config_text(
        alerts={"sinks": sinks, "spool_dir": str(agent.base / "spool")})})
    _wait_reloads(agent, reloads + 1)
    assert agent.metric("netvigil_reload_last_success") == 1
    agent.connects(2)  # repeats of one alert may be aggregated by the noise control: >= 1
    assert agent.wait_metric("netvigil_alerts_delivered_total", 1, sink="file") >= 1
    assert BASE_RULE in [json.loads(line)["rule"] for line in extra.read_text().splitlines()]
