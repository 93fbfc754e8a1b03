"""The running agent's HTTP endpoint as a kubelet and a Prometheus see it."""
from __future__ import annotations

import psutil
from live_agent import LiveAgent

from sensor.api_client import request_one


def test_healthz_and_readyz_name_their_conditions(live_agent: LiveAgent) -> None:
    code, body = live_agent.get("/healthz")
    assert code == 200 and body.startswith("ok: poll loop turned")
    code, body = live_agent.get("/readyz")
    assert code == 200, body
    assert "[+]programs: attached" in body and "[+]rules: 2 rules" in body and body.endswith("ready\n")
    assert live_agent.get("/nope")[0] == 404


def test_metrics_parse_and_count_a_known_workload(live_agent: LiveAgent) -> None:
    rule = "Test connect to watched port"
    before = live_agent.metrics()
    connects0 = before.get(("netvigil_events_total", (("type", "connect"),)), 0.0)
    matches0 = before.get(("netvigil_rule_matches_total", (("priority", "Notice"), ("rule", rule))), 0.0)
    live_agent.connects(25)
    matches = live_agent.wait_metric("netvigil_rule_matches_total", matches0 + 25, rule=rule, priority="Notice")
    assert matches == matches0 + 25  # exactly the workload's connects matched the rule
    after = live_agent.metrics()
    assert after[("netvigil_events_total", (("type", "connect"),))] >= connects0 + 25
    assert after[("netvigil_events_lost_total", ())] == 0
    assert after[("netvigil_rules_loaded", ())] == 2
    assert after[("netvigil_ready", ())] == 1
    assert after[("netvigil_agent_resident_memory_bytes", ())] > 10 << 20
    assert after[("netvigil_agent_cpu_seconds_total", (("mode", "user"),))] > 0
    assert 0 <= after[("netvigil_ring_buffer_fill_ratio", ())] < 1
    assert after[("netvigil_ring_buffer_size_bytes", ())] > 0
    build = [k for k in after if k[0] == "netvigil_build_info"]
    assert build and dict(build[0][1])["version"]
    # alerts reached the stdout sink and the sink counters say so
    delivered = live_agent.wait_metric("netvigil_alerts_delivered_total", 1, sink="stdout")
    assert delivered >= 1 and after[("netvigil_sink_up", (("sink", "stdout"),))] == 1
    # the static audit entry of the test rule is in the deny map
    assert after[("netvigil_enforcement_entries", (("rule", "Test static audit entry"),))] == 1
    assert ("netvigil_enforcement_verdicts_total", (("mode", "audit"),)) in after
    # every counter is named *_total, every name netvigil_*
    names = {name for name, _ in after}
    assert all(n.startswith("netvigil_") for n in names)
    text = live_agent.get("/metrics")[1]
    counters = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE") and line.endswith("counter")]
    assert counters and all(n.endswith("_total") for n in counters)


def test_logs_are_json_lines(live_agent: LiveAgent) -> None:
    records = live_agent.log_records()  # raises if any line is not JSON
    assert records and all({"time", "level", "logger", "msg"} <= set(r) for r in records)
    assert any("sensor running" in r["msg"] for r in records)
    assert all(r["time"].endswith("Z") and "T" in r["time"] for r in records)


def test_metrics_and_status_report_the_agents_own_cpu_and_memory(live_agent: LiveAgent) -> None:
    assert live_agent.proc is not None
    agent = psutil.Process(live_agent.proc.pid)
    cpu0 = sum(agent.cpu_times()[:2])
    metrics = live_agent.metrics()
    status = request_one(live_agent.socket, {"op": "status"})
    cpu1, rss = sum(agent.cpu_times()[:2]), agent.memory_info().rss
    scraped = sum(metrics[("netvigil_agent_cpu_seconds_total", (("mode", m),))] for m in ("user", "system"))
    assert cpu0 - 0.05 <= scraped <= cpu1 + 0.05
    res = status["resources"]
    assert status["pid"] == agent.pid
    assert cpu0 - 0.05 <= res["cpu_user_s"] + res["cpu_system_s"] <= cpu1 + 0.05
    for reported in (res["rss_bytes"], metrics[("netvigil_agent_resident_memory_bytes", ())]):
        assert abs(reported - rss) < rss * 0.2
    assert res["threads"] >= 2 and metrics[("netvigil_agent_threads", ())] >= 2  # poll loop, HTTP, API...
