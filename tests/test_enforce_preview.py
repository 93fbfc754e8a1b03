"""The replay preview acts as the datapath would: the enforcement manager's scopes, cap
and safety list decide what is installed, and protected connections are spared."""
from __future__ import annotations

from rules.loader import load_rules_text
from sensor.enforcement.keys import DenyKey, SafeKey
from sensor.enforcement.safety import SafetyList
from sensor.replay.enforce_preview import EnforcePreview

RULES = """
- rule: Talks to anything on 8443
  desc: d
  condition: evt.type = connect and fd.rport = 8443
  output: o
  priority: warning
  enforce: {action: deny, scope: process, ttl: 1m, mode: enforce}
- rule: No DNS but ours
  desc: d
  condition: evt.num < 0
  output: never
  priority: notice
  enforce:
    action: deny
    static: {cidrs: [0.0.0.0/0], ports: [53], protocol: udp}
"""
SAFETY = SafetyList.build(dns=False, kubernetes_api=False, extra=[SafeKey.build("10.0.0.53")])


def _conn(n: int, ip: str, port: int, proto: str = "tcp", cg: int = 700) -> dict:
    return {"evt.type": "connect", "evt.num": n, "evt.time": n * 1_000_000, "fd.rip": ip,
            "fd.sip": ip, "fd.rport": port, "fd.l4proto": proto, "proc.cgroup_id": cg,
            "container.id": "host", "proc.exepath": "/usr/bin/app", "proc.exec_id": "x"}


def _report(events: list[dict]) -> dict[str, dict]:
    preview = EnforcePreview(load_rules_text(RULES), SAFETY)
    for ev in events:
        preview.observe(ev)
    return {r["rule"]: r for r in preview.report()["rules"]}


def test_preview_refuses_the_entries_the_safety_list_refuses() -> None:
    loopback = DenyKey.build(700, "egress", "tcp", 8443, "127.0.0.1/32")
    assert SAFETY.covers(loopback)      # the manager refuses this entry on a live node ...
    rep = _report([_conn(1, "127.0.0.1", 8443), _conn(2, "127.0.0.1", 8443)])
    rule = rep["Talks to anything on 8443"]
    # ... and so does the preview: both matches refused, nothing denied afterwards
    assert (rule["detected"], rule["denied"], rule["entries_refused_safety"]) == (2, 0, 2)


def test_preview_spares_connections_the_safety_list_protects_inside_a_broad_entry() -> None:
    rep = _report([_conn(1, "10.0.0.53", 53, "udp"), _conn(2, "192.0.2.1", 53, "udp"),
                   _conn(3, "10.0.0.53", 53, "udp")])
    static = rep["No DNS but ours (static)"]
    assert (static["entries_refused_safety"], static["denied"], static["connections_spared_safety"]) \
        == (0, 1, 2)
    assert static["workloads"][0]["destinations"] == {"192.0.2.1:53/udp": 1}


def test_preview_entries_follow_scope_and_ttl() -> None:
    hour = 3600 * 10**9
    events = [_conn(1, "192.0.2.9", 8443), _conn(2, "192.0.2.9", 8443),
              _conn(3, "192.0.2.9", 8443, cg=701)]          # another cgroup: not covered
    late = _conn(4, "192.0.2.9", 8443)
    late["evt.time"] += hour                                 # after the 1m TTL: expired
    rule = _report(events + [late])["Talks to anything on 8443"]
    assert (rule["detected"], rule["denied"]) == (4, 1)


WORKLOAD_RULES = """
- rule: Workload talks to 8443
  desc: d
  condition: evt.type = connect and fd.rport = 8443 and k8s.pod.name = web-1
  output: o
  priority: warning
  enforce: {action: deny, scope: workload, ttl: 1m, mode: enforce}
"""


def _pod_conn(n: int, ns: str, pod: str, workload: str, cg: int) -> dict:
    return {**_conn(n, "192.0.2.9", 8443, cg=cg), "container.id": f"c{cg}", "k8s.ns.name": ns,
            "k8s.pod.name": pod, "k8s.pod.uid": f"uid-{pod}", "k8s.workload.kind": "Deployment",
            "k8s.workload.name": workload}


def test_preview_workload_scope_covers_the_other_pods_of_the_workload_only() -> None:
    preview = EnforcePreview(load_rules_text(WORKLOAD_RULES), SAFETY)
    for ev in (_pod_conn(1, "shop", "web-1", "web", 801),      # matches: entry for shop/web
               _pod_conn(2, "shop", "web-2", "web", 802),      # same workload, other pod
               _pod_conn(3, "shop", "api-1", "api", 803),      # same namespace, other workload
               _pod_conn(4, "lab", "web-9", "web", 804)):      # same name, other namespace
        preview.observe(ev)
    (rule,) = preview.report()["rules"]
    assert (rule["detected"], rule["denied"]) == (1, 1)
    assert [w["workload"] for w in rule["workloads"] if w["denied"]] == ["pod shop/web-2"]
