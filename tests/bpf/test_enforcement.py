"""Enforcement against the real kernel: cgroup sock_addr programs, tc, pinned maps.

Runs as root. Clients run as real processes in our own child cgroups; servers
live in our own netns behind our own veth pair (10.231.x.0/24).
"""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rules.loader import load_rules_text
from sensor import cgroups
from sensor.enforcement import bpfsys
from sensor.enforcement.datapath import META_SOURCE_HASH, TC_PREF, EnforcementDatapath, remove_all
from sensor.enforcement.errors import AttachError
from sensor.enforcement.keys import DenyKey, SafeKey
from sensor.enforcement.layout import CGROUP_PROGRAMS
from sensor.enforcement.manager import EnforcementManager, manual_entries
from sensor.enforcement.maps import EnforcementMaps
from sensor.enforcement.safety import SafetyList
from enforcement_fixtures import (  # noqa: F401 (fixtures)
    BIND_CLIENT, NS_IP, NS_IP_OTHER, PID, SESSION_CLIENT, TCP_CLIENT, TCP_PORT, TCP_PORT2,
    UDP_CLIENT, UDP_PORT, CgroupTree, _rm_cgroup, cg_tree, datapath, make_cgroup_tree, run_in,
    spawn_in, pin_layout_for_test, test_net,
)

EPERM = f"ERR {errno.EPERM}"


@dataclass
class Ctx:
    dp: EnforcementDatapath
    maps: EnforcementMaps
    manager: EnforcementManager
    cg: CgroupTree
    verdicts: list[dict] = field(default_factory=list)

    def drain(self) -> list[dict]:
        """Verdicts delivered so far (polls the ring buffer)."""
        self.dp.poll(50)
        out, self.verdicts[:] = list(self.verdicts), []
        return out


@pytest.fixture(scope="module")
def verdict_sink(datapath: EnforcementDatapath) -> list[dict]:
    """Every verdict of the module's datapath lands here (opened once: one consumer)."""
    sink: list[dict] = []
    datapath.open_verdicts(sink.append)
    return sink


@pytest.fixture
def enf(datapath: EnforcementDatapath, cg_tree: CgroupTree, verdict_sink: list[dict]) -> Iterator[Ctx]:
    maps = datapath.maps
    assert maps is not None
    maps.flush()
    safety = SafetyList.build(loopback=True, dns=False, kubernetes_api=False)
    manager = EnforcementManager(maps, safety)
    manager.reconcile()
    ctx = Ctx(datapath, maps, manager, cg_tree, verdict_sink)
    ctx.drain()
    try:
        yield ctx
    finally:
        manager.stop()
        maps.flush()


def _rules(text: str):
    return load_rules_text(textwrap.dedent(text), "test-rules.yaml")


def test_static_rule_denies_first_connect_from_target_cgroup_only(enf: Ctx) -> None:
    rs = _rules(f"""
        - rule: Block exfil endpoint
          desc: static deny
          condition: evt.type = connect and fd.sip = {NS_IP}
          output: "connect to %fd.sip"
          priority: WARNING
          enforce:
            action: deny
            mode: enforce
            static:
              cidrs: [{NS_IP}/32]
              protocol: tcp
              cgroups: [/{enf.cg.a.relative_to(cgroups.mount())}]
        """)
    summary = enf.manager.reconcile(rs.static_enforcements(), known_rules=[r.name for r in rs.rules])
    assert summary["static"] == 1
    # the very first connection from cgroup a is refused synchronously
    assert run_in(enf.cg.a, TCP_CLIENT, NS_IP, TCP_PORT) == EPERM
    # another cgroup is not in scope
    assert run_in(enf.cg.b, TCP_CLIENT, NS_IP, TCP_PORT) == "OK hi"
    # another address of the same host is not covered by the /32
    assert run_in(enf.cg.a, TCP_CLIENT, NS_IP_OTHER, TCP_PORT) == "OK hi"
    v = [e for e in enf.drain() if e["netvigil.verdict"] == "deny"]
    assert len(v) == 1
    assert v[0]["netvigil.rule"] == "Block exfil endpoint"
    assert v[0]["fd.rip"] == NS_IP and v[0]["fd.rport"] == TCP_PORT
    assert v[0]["proc.cgroup_id"] == enf.cg.a_id
    assert v[0]["evt.type"] == "netvigil_verdict" and v[0]["evt.res"] == "EPERM"
    assert v[0]["proc.pid"] > 0 and v[0]["proc.name"].startswith("python")
    hits = {k.network: val.hits for k, val in enf.maps.entries().items()}
    assert hits == {f"{NS_IP}/32": 1}


def test_ipv4_mapped_ipv6_connect_is_denied_too(enf: Ctx) -> None:
    key = DenyKey.build(enf.cg.a_id, "egress", "tcp", TCP_PORT, f"{NS_IP}/32")
    manual_entries(enf.maps, [key], mode="enforce", ttl_s=None)
    assert run_in(enf.cg.a, TCP_CLIENT, f"::ffff:{NS_IP}", TCP_PORT) == EPERM
    # other port: the entry names 8080 only
    assert run_in(enf.cg.a, TCP_CLIENT, NS_IP, TCP_PORT2) == "OK hi"
    assert [e["netvigil.hook"] for e in enf.drain()] == ["connect6"]


def test_udp_send_to_denied_destination_fails(enf: Ctx) -> None:
    assert run_in(enf.cg.a, UDP_CLIENT, NS_IP, UDP_PORT) == "OK hi"
    key = DenyKey.build(enf.cg.a_id, "egress", "udp", UDP_PORT, f"{NS_IP}/32")
    manual_entries(enf.maps, [key], mode="enforce", ttl_s=60)
    assert run_in(enf.cg.a, UDP_CLIENT, NS_IP, UDP_PORT) == EPERM
    # a udp-only entry does not touch tcp to the same host and port number family
    assert run_in(enf.cg.a, TCP_CLIENT, NS_IP, TCP_PORT) == "OK hi"
    v = enf.drain()
    assert [(e["netvigil.hook"], e["fd.l4proto"]) for e in v] == [("sendmsg4", "udp")]


def test_bind_to_denied_port_fails(enf: Ctx) -> None:
    rs = _rules("""
        - rule: No backdoor listener
          desc: listener on 4444
          condition: evt.type = listen and fd.lport = 4444
          output: "listener %fd.lport"
          priority: WARNING
          enforce:
            action: deny
            target: listen_port
            scope: node
            mode: enforce
            static:
              ports: [4444]
              protocol: tcp
        """)
    enf.manager.reconcile(rs.static_enforcements())
    assert run_in(enf.cg.a, BIND_CLIENT, "0.0.0.0", 4444) == EPERM
    assert run_in(enf.cg.b, BIND_CLIENT, "0.0.0.0", 4444) == EPERM   # node scope
    assert run_in(enf.cg.a, BIND_CLIENT, "0.0.0.0", 4445) == "OK"
    v = enf.drain()
    assert {e["netvigil.hook"] for e in v} == {"bind4"}
    assert all(e["fd.lport"] == 4444 and e["netvigil.rule"] == "No backdoor listener" for e in v)


def test_detection_denies_following_connections_until_ttl(enf: Ctx) -> None:
    rs = _rules(f"""
        - rule: Contact with C2
          desc: detection-driven deny
          condition: evt.type = connect and fd.sip = {NS_IP}
          output: "c2 %fd.sip:%fd.sport"
          priority: CRITICAL
          enforce:
            action: deny
            scope: process
            ttl: 2s
            mode: enforce
        """)
    # the first connection happened before any rule knew about it: it succeeds
    assert run_in(enf.cg.a, TCP_CLIENT, NS_IP, TCP_PORT) == "OK hi"
    event = {"evt.type": "connect", "evt.time": time.time_ns(), "fd.sip": NS_IP, "fd.rip": NS_IP,
             "fd.sport": TCP_PORT, "fd.rport": TCP_PORT, "fd.l4proto": "tcp",
             "proc.cgroup_id": enf.cg.a_id, "container.id": "host"}
    matches = rs.evaluate(event)
    assert [m.rule for m in matches] == ["Contact with C2"]
    enf.manager.submit(matches[0].enforcement)  # what the run loop's queue worker does
    installed = time.monotonic()
    assert run_in(enf.cg.a, TCP_CLIENT, NS_IP, TCP_PORT) == EPERM
    assert run_in(enf.cg.a, TCP_CLIENT, NS_IP, TCP_PORT) == EPERM
    assert run_in(enf.cg.b, TCP_CLIENT, NS_IP, TCP_PORT) == "OK hi"   # process scope: a only
    stats = enf.manager.stats()
    assert stats["installed"] == 1 and stats["detect_to_entry"]["count"] == 1
    assert stats["detect_to_entry"]["p99_ms"] < 1000
    time.sleep(max(0.0, 2.2 - (time.monotonic() - installed)))
    # expired: the kernel ignores it even before the sweeper runs
    assert run_in(enf.cg.a, TCP_CLIENT, NS_IP, TCP_PORT) == "OK hi"
    assert enf.manager.sweep() == 1
    assert enf.maps.entries() == {}
    assert len([e for e in enf.drain() if e["netvigil.verdict"] == "deny"]) == 2


def test_tc_cuts_established_flow_once_remote_is_denied(enf: Ctx) -> None:
    client = spawn_in(enf.cg.a, SESSION_CLIENT, NS_IP, TCP_PORT2)
    try:
        assert client.stdin is not None and client.stdout is not None
        assert client.stdout.readline().startswith("CONNECTED")
        client.stdin.write("send\n")
        assert client.stdout.readline().strip() == "OK"
        # deny the remote for cgroup a: connect hooks no longer matter, tc egress drops
        key = DenyKey.build(enf.cg.a_id, "egress", "tcp", 0, f"{NS_IP}/32")
        manual_entries(enf.maps, [key], mode="enforce", ttl_s=60)
        client.stdin.write("send\n")
        assert client.stdout.readline().strip() == "TIMEOUT"
        v = enf.drain()
        assert v and {e["netvigil.hook"] for e in v} <= {"tc_egress", "tc_ingress"}
        assert any(e["netvigil.hook"] == "tc_egress" and e["fd.rip"] == NS_IP
                   and e["fd.rport"] == TCP_PORT2 and e["proc.cgroup_id"] == enf.cg.a_id for e in v)
        # removing the entry lets the same flow recover (TCP retransmits)
        enf.maps.remove(key)
        replies = []
        for _ in range(4):
            client.stdin.write("send\n")
            replies.append(client.stdout.readline().strip())
            if replies[-1] == "OK":
                break
        assert replies[-1] == "OK", replies
    finally:
        client.kill()
        client.wait()


def test_audit_mode_blocks_nothing_and_reports_would_deny(enf: Ctx) -> None:
    key = DenyKey.build(0, "egress", "any", 0, f"10.231.0.0/16")
    manual_entries(enf.maps, [key], mode="audit", ttl_s=60, rule="audit rollout")
    enf.drain()
    before = enf.maps.counters()
    proc_out = run_in(enf.cg.a, TCP_CLIENT, NS_IP, TCP_PORT)
    assert proc_out == "OK hi"
    assert run_in(enf.cg.b, UDP_CLIENT, NS_IP, UDP_PORT) == "OK hi"
    v = enf.drain()
    connects = [e for e in v if e["netvigil.hook"] == "connect4"]
    assert connects and all(e["netvigil.verdict"] == "audit" for e in v)
    assert connects[0]["netvigil.rule"] == "audit rollout" and connects[0]["evt.res"] == "SUCCESS"
    assert any(e["netvigil.hook"] == "sendmsg4" for e in v)
    # the kernel's own counters agree: every decision was an audit, none a deny
    after = enf.maps.counters()
    assert after["denied"] == before["denied"]
    assert after["audited"] - before["audited"] == len(v)


def test_enforce_entry_wins_over_audit_entry_at_another_scope(enf: Ctx) -> None:
    manual_entries(enf.maps, [DenyKey.build(enf.cg.a_id, "egress", "tcp", 0, f"{NS_IP}/32")],
                   mode="audit", ttl_s=60, rule="audit one")
    manual_entries(enf.maps, [DenyKey.build(0, "egress", "tcp", TCP_PORT, "10.231.0.0/16")],
                   mode="enforce", ttl_s=60, rule="enforce one")
    assert run_in(enf.cg.a, TCP_CLIENT, NS_IP, TCP_PORT) == EPERM
    v = enf.drain()
    assert [(e["netvigil.verdict"], e["netvigil.rule"]) for e in v] == [("deny", "enforce one")]


def test_parent_cgroup_scope_covers_children(enf: Ctx) -> None:
    parent_id = cgroups.cgroup_id(enf.cg.parent)
    manual_entries(enf.maps, [DenyKey.build(parent_id, "egress", "tcp", 0, f"{NS_IP}/32")],
                   mode="enforce", ttl_s=60)
    assert run_in(enf.cg.a, TCP_CLIENT, NS_IP, TCP_PORT) == EPERM
    assert run_in(enf.cg.b, TCP_CLIENT, NS_IP, TCP_PORT) == EPERM
    assert {e["netvigil.scope_cgroup_id"] for e in enf.drain()} == {parent_id}


def test_safety_list_wins_over_deny_entries(enf: Ctx) -> None:
    safety = SafetyList.build(loopback=True, dns=False, kubernetes_api=False,
                              extra=[SafeKey.build(f"{NS_IP}/32")])
    manager = EnforcementManager(enf.maps, safety)
    manager.reconcile()
    # an entry naming only the protected address is refused by the manager ...
    rs = _rules(f"""
        - rule: Bad rule
          desc: would cut the node off
          condition: evt.type = connect
          output: x
          priority: WARNING
          enforce: {{action: deny, scope: node, mode: enforce, static: {{cidrs: [{NS_IP}/32]}}}}
        """)
    res = manager.submit(rs.static_enforcements()[0])
    assert res.installed == () and "safety" in res.rejected
    # ... and a broad entry that merely contains it is overridden in the kernel
    manual_entries(enf.maps, [DenyKey.build(0, "egress", "any", 0, "10.231.0.0/16")],
                   mode="enforce", ttl_s=60)
    before = enf.maps.counters()["safety_overrides"]
    assert run_in(enf.cg.a, TCP_CLIENT, NS_IP, TCP_PORT) == "OK hi"
    assert run_in(enf.cg.a, TCP_CLIENT, NS_IP_OTHER, TCP_PORT) == EPERM
    # counted per decision: the connect, and each packet tc let through
    assert enf.maps.counters()["safety_overrides"] > before
    # loopback is protected by default
    manual_entries(enf.maps, [DenyKey.build(0, "egress", "any", 0, "0.0.0.0/0")],
                   mode="enforce", ttl_s=60)
    assert run_in(enf.cg.a, BIND_CLIENT, "127.0.0.1", 0) == "OK"
    assert [e["fd.rip"] for e in enf.drain()] == [NS_IP_OTHER]
    manager.stop()


AGENT = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, %r)
    from pathlib import Path
    from sensor.enforcement.datapath import EnforcementDatapath
    from sensor.enforcement.keys import DenyKey
    from sensor.enforcement.layout import PinLayout
    from sensor.enforcement.manager import manual_entries
    base, cgroup, child_id, ip = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    dp = EnforcementDatapath(PinLayout(Path(base)))
    report = dp.install(cgroup)
    if not dp.maps.entries():
        manual_entries(dp.maps, [DenyKey.build(child_id, "egress", "tcp", 0, ip + "/32")],
                       mode="enforce", ttl_s=None, rule="persisted")
    print(json.dumps({"attached": report.attached, "adopted": report.adopted,
                      "replaced": report.replaced}), flush=True)
    time.sleep(600)
""") % str(Path(__file__).resolve().parents[2])


def _start_agent(base: Path, tree: CgroupTree) -> tuple[subprocess.Popen, dict]:
    import json

    proc = subprocess.Popen([sys.executable, "-c", AGENT, str(base), str(tree.parent),
                             str(tree.a_id), NS_IP], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "agent did not start"
    return proc, json.loads(line)


def _attached_ids(cg: Path) -> dict[int, list[int]]:
    fd = os.open(cg, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return {at: bpfsys.prog_query(fd, at) for _, at in CGROUP_PROGRAMS.values()}
    finally:
        os.close(fd)


def test_sigkilled_agent_leaves_enforcement_and_restart_adopts(test_net) -> None:  # noqa: F811
    tree = make_cgroup_tree(f"netvigil-test-{PID}-kill")
    layout = pin_layout_for_test("-kill")
    agents: list[subprocess.Popen] = []
    try:
        proc, report = _start_agent(layout.base, tree)
        agents.append(proc)
        assert len(report["attached"]) == 6 and report["adopted"] == []
        assert run_in(tree.a, TCP_CLIENT, NS_IP, TCP_PORT) == EPERM
        first_ids = _attached_ids(tree.parent)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # no agent: enforcement is still in force, and the entry is still pinned
        assert run_in(tree.a, TCP_CLIENT, NS_IP, TCP_PORT) == EPERM
        assert run_in(tree.b, TCP_CLIENT, NS_IP, TCP_PORT) == "OK hi"
        # restarted agent adopts: nothing attached twice, same programs
        proc, report = _start_agent(layout.base, tree)
        agents.append(proc)
        assert report["attached"] == [] and len(report["adopted"]) == 6
        assert _attached_ids(tree.parent) == first_ids
        assert all(len(ids) == 1 for ids in first_ids.values())
        with EnforcementMaps(layout) as maps:
            assert [k.network for k in maps.entries()] == [f"{NS_IP}/32"]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # an agent with different BPF source replaces the programs, still one copy each
        dp = EnforcementDatapath(layout)
        try:
            dp.load().meta_set(0, 1)
            report2 = dp.install(tree.parent)
        finally:
            dp.close()
        assert len(report2.replaced) == 6 and report2.adopted == []
        new_ids = _attached_ids(tree.parent)
        assert all(len(ids) == 1 for ids in new_ids.values()) and new_ids != first_ids
        assert run_in(tree.a, TCP_CLIENT, NS_IP, TCP_PORT) == EPERM
        # cleanup: nothing attached, nothing pinned
        done = EnforcementDatapath(layout).cleanup()
        assert done
        assert not layout.base.exists()
        assert all(ids == [] for ids in _attached_ids(tree.parent).values())
        assert run_in(tree.a, TCP_CLIENT, NS_IP, TCP_PORT) == "OK hi"
    finally:
        for p in agents:
            if p.poll() is None:
                p.kill()
                p.wait()
        if layout.base.exists():
            from sensor.enforcement.datapath import remove_all
            remove_all(layout)
        _rm_cgroup(tree.parent)


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    from sensor.cli import main

    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_block_list_unblock_flush_on_pinned_maps(enf: Ctx, capsys) -> None:
    import json

    base = str(enf.dp.layout.base)
    cg_a = "/" + str(enf.cg.a.relative_to(cgroups.mount()))
    rc, out, _ = _cli(capsys, "enforce", "--pin-path", base, "block", "--cidr", NS_IP, "--port",
                      str(TCP_PORT), "--proto", "tcp", "--cgroup", cg_a, "--ttl", "1m")
    assert rc == 0 and "blocked" in out
    assert run_in(enf.cg.a, TCP_CLIENT, NS_IP, TCP_PORT) == EPERM
    assert run_in(enf.cg.b, TCP_CLIENT, NS_IP, TCP_PORT) == "OK hi"
    rc, out, _ = _cli(capsys, "enforce", "--pin-path", base, "list", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 1
    row = rows[0]
    assert (row["rule"], row["mode"], row["scope"], row["cidr"], row["port"], row["hits"]) == \
        ("manual", "enforce", cg_a, f"{NS_IP}/32", TCP_PORT, 1)
    assert 50 < row["ttl_left_s"] <= 60
    # the safety list (loopback) refuses a manual entry too
    rc, _, err = _cli(capsys, "enforce", "--pin-path", base, "block", "--cidr", "127.0.0.1", "--node")
    assert rc == 2 and "safety list" in err
    rc, out, _ = _cli(capsys, "enforce", "--pin-path", base, "unblock", "--cidr", NS_IP, "--port",
                      str(TCP_PORT), "--proto", "tcp", "--cgroup", cg_a)
    assert rc == 0 and "removed 1 entry" in out
    assert run_in(enf.cg.a, TCP_CLIENT, NS_IP, TCP_PORT) == "OK hi"
    _cli(capsys, "enforce", "--pin-path", base, "block", "--port", "9999", "--node", "--mode", "audit")
    rc, out, _ = _cli(capsys, "enforce", "--pin-path", base, "flush")
    assert rc == 0 and "removed 1 entry" in out
    assert enf.maps.entries() == {}
    rc, _, err = _cli(capsys, "enforce", "--pin-path", base + "-missing", "list")
    assert rc == 2 and "no enforcement maps pinned" in err


def test_scope_records_are_kept_in_a_pinned_map_next_to_the_entries(enf: Ctx) -> None:
    from sensor.boottime import boot_ns
    from sensor.enforcement.errors import InvalidEntryError
    from sensor.enforcement.keys import META_WIDE
    from sensor.enforcement.scope_records import MAX_JSON, ScopeRecord, ScopeRecords

    store = ScopeRecords(enf.maps)
    pin = Path(store.path)
    assert store.records() == [] and not pin.exists()          # made on first write only
    key = DenyKey.build(0, "egress", "tcp", TCP_PORT, NS_IP)
    stamp, wide = store.stamp(), enf.maps.meta_get(META_WIDE)
    rec = ScopeRecord.build("workload", "shop/Deployment/web", key, ttl_s=60)
    try:
        assert store.put([rec]) == 1 and pin.exists() and store.stamp() != stamp
        assert enf.maps.meta_get(META_WIDE) == wide     # the stamp has a slot of its own
        with ScopeRecords(enf.maps) as other:                   # another process's view
            assert other.records() == [rec]
        again = ScopeRecord.build("workload", "shop/Deployment/web", key, mode="audit", rule="incident-7")
        store.put([again])                                       # same scope and entry: replaced
        assert store.records() == [again] and again.expires_ns == 0
        labels = ScopeRecord.build("selector", "shop/tier=fe,app=web", key, ttl_s=60)
        store.put([labels])
        assert store.remove([ScopeRecord.build("selector", "shop/app=web,tier=fe", key)]) == 1  # label order
        old = ScopeRecord.build("namespace", "shop", key, ttl_s=1, now_ns=boot_ns() - 2 * 10**9)
        store.put([old])
        assert store.records() == [again]                        # expired: skipped ...
        assert len(list(store._open(create=False).keys())) == 1  # ... and swept
        assert store.clear("other rule") == 0 and store.clear("incident-7") == 1 and store.records() == []
        with pytest.raises(InvalidEntryError, match="too long to store"):
            ScopeRecord.build("selector", "shop/" + ",".join(f"k{i}=v" for i in range(MAX_JSON // 5)), key)
        with pytest.raises(InvalidEntryError, match="--workload"):
            ScopeRecord.build("workload", "shop", key)
    finally:
        store.clear()
        store.close()


def test_agent_gives_a_stored_manual_block_to_pods_it_names(enf: Ctx, tmp_path) -> None:
    """RecordSync (the agent's pod thread) turns a stored record into a group: a pod of it
    gets a manual entry that the kernel enforces and that reconcile keeps; removing the
    record stops covering new pods."""
    from sensor.enforcement.keys import ORIGIN_MANUAL
    from sensor.enforcement.pod_scopes import PodIdentity, PodScopes
    from sensor.enforcement.scope_records import RecordSync, ScopeRecord, ScopeRecords

    cgroup_of = {"uid-web": enf.cg.a, "uid-batch": enf.cg.b}      # the pods' cgroups
    scopes = PodScopes(tmp_path, find_cgroup=lambda uid, _mount: cgroup_of.get(uid))
    scopes.note(PodIdentity("uid-batch", "shop", "Deployment", "batch", "batch-1"))
    sync = RecordSync(enf.maps, scopes)
    assert sync.poll() and not sync.poll()                        # read once; again only on change
    rec = ScopeRecord.build("workload", "shop/web", DenyKey.build(0, "egress", "tcp", TCP_PORT, NS_IP), ttl_s=60)
    store = ScopeRecords(enf.maps)
    try:
        store.put([rec])
        assert sync.poll() and scopes.groups() and scopes.started() == []   # no pod of it yet
        scopes.note(PodIdentity("uid-web", "shop", "Deployment", "web", "web-1"))   # starts later
        ((req, origin),) = scopes.started()
        enf.manager.submit(req, origin=origin)
        (val,) = [v for k, v in enf.maps.entries().items() if k.scope == enf.cg.a_id]
        assert val.origin == ORIGIN_MANUAL and abs(val.expires_ns - rec.expires_ns) < 10**9
        assert run_in(enf.cg.a, TCP_CLIENT, NS_IP, TCP_PORT) == EPERM
        assert run_in(enf.cg.b, TCP_CLIENT, NS_IP, TCP_PORT) == "OK hi"
        enf.manager.reconcile(known_rules=[])                      # manual entries stay
        assert any(k.scope == enf.cg.a_id for k in enf.maps.entries())
        store.clear()
        assert sync.poll() and scopes.groups() == []
    finally:
        store.clear()
        store.close()


def test_cli_block_by_namespace_without_pods_stores_a_scope_record(enf: Ctx, capsys, tmp_path) -> None:
    import json

    base = str(enf.dp.layout.base)
    where = ["--namespace", "shop", "--cidr", NS_IP, "--port", str(TCP_PORT), "--host-root", str(tmp_path)]
    rc, out, _ = _cli(capsys, "enforce", "--pin-path", base, "block", *where, "--ttl", "10m")
    assert rc == 0 and "no pod matches now; pods that start later are covered while an agent runs" in out
    rc, out, _ = _cli(capsys, "enforce", "--pin-path", base, "list", "--json")
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert (row["type"], row["scope"], row["cidr"], row["port"], row["mode"], row["origin"]) == \
        ("scope_record", "namespace shop", f"{NS_IP}/32", TCP_PORT, "enforce", "manual")
    assert 590 < row["ttl_left_s"] <= 600
    rc, out, _ = _cli(capsys, "enforce", "--pin-path", base, "status", "--json")
    assert json.loads(out)["scope_records"] == 1
    rc, out, _ = _cli(capsys, "enforce", "--pin-path", base, "unblock", *where)
    assert rc == 0 and "removed 0 entries and 1 scope record" in out
    rc, out, _ = _cli(capsys, "enforce", "--pin-path", base, "unblock", *where)
    assert rc == 1
    _cli(capsys, "enforce", "--pin-path", base, "block", *where, "--rule", "incident-7")
    rc, out, _ = _cli(capsys, "enforce", "--pin-path", base, "flush", "--rule", "other")
    assert "scope record" not in out
    rc, out, _ = _cli(capsys, "enforce", "--pin-path", base, "flush", "--rule", "incident-7")
    assert rc == 0 and "and 1 scope record" in out
    rc, out, err = _cli(capsys, "enforce", "--pin-path", base, "block", "--namespace", "shop",
                        "--cidr", "127.0.0.1", "--host-root", str(tmp_path))
    assert rc == 2 and "safety list" in err                      # refused before anything is stored
    rc, out, _ = _cli(capsys, "enforce", "--pin-path", base, "list", "--json")
    assert out == ""


def test_second_agent_on_same_pins_adopts_cgroup_and_tc_programs(enf: Ctx, test_net) -> None:  # noqa: F811
    before = _attached_ids(enf.cg.parent)
    tc_before = subprocess.run(["tc", "filter", "show", "dev", test_net.host_if, "egress"],
                               capture_output=True, text=True).stdout
    other = EnforcementDatapath(enf.dp.layout)
    try:
        report = other.install(enf.cg.parent, [test_net.host_if])
    finally:
        other.close()
    assert report.attached == [] and report.replaced == [] and len(report.adopted) == 8
    assert _attached_ids(enf.cg.parent) == before
    tc_after = subprocess.run(["tc", "filter", "show", "dev", test_net.host_if, "egress"],
                              capture_output=True, text=True).stdout
    assert tc_after == tc_before and tc_after.count("nv_tc_egress") == 1
    # the first agent's handles still work: same maps
    manual_entries(enf.maps, [DenyKey.build(enf.cg.a_id, "egress", "tcp", 0, f"{NS_IP}/32")],
                   mode="enforce", ttl_s=60)
    assert run_in(enf.cg.a, TCP_CLIENT, NS_IP, TCP_PORT) == EPERM


def test_pod_scope_covers_every_container_of_the_pod(enf: Ctx) -> None:
    rs = _rules(f"""
        - rule: Pod talks to C2
          desc: pod-wide deny
          condition: evt.type = connect and fd.sip = {NS_IP}
          output: "c2 %fd.sip"
          priority: CRITICAL
          enforce: {{action: deny, scope: pod, ttl: 1m, mode: enforce}}
        """)
    # "container" a of the "pod" (the test parent cgroup) made the connection
    holder = spawn_in(enf.cg.a, "import sys; sys.stdin.read()")
    try:
        event = {"evt.type": "connect", "evt.time": time.time_ns(), "fd.sip": NS_IP, "fd.rip": NS_IP,
                 "fd.sport": TCP_PORT, "fd.rport": TCP_PORT, "fd.l4proto": "tcp",
                 "proc.pid": holder.pid, "proc.cgroup_id": enf.cg.a_id, "container.id": "0123456789ab"}
        matches = rs.evaluate(event)
        assert [m.rule for m in matches] == ["Pod talks to C2"]
        enf.manager.submit(matches[0].enforcement)
    finally:
        holder.kill()
        holder.wait()
    (key,) = enf.maps.entries()
    assert key.scope == cgroups.cgroup_id(enf.cg.parent)
    # the sibling container b of the same pod is denied too
    assert run_in(enf.cg.b, TCP_CLIENT, NS_IP, TCP_PORT) == EPERM


@pytest.fixture
def bare_veth() -> Iterator[str]:
    """A veth pair of this test in the host netns (no addresses: only its qdiscs matter)."""
    dev, peer = f"nvfa{PID % 100000}", f"nvfb{PID % 100000}"
    subprocess.run(["ip", "link", "add", dev, "type", "veth", "peer", "name", peer],
                   check=True, capture_output=True)
    try:
        yield dev
    finally:
        subprocess.run(["ip", "link", "del", dev], capture_output=True)


def _tc(*args: str) -> str:
    return subprocess.run(["tc", *args], check=True, capture_output=True, text=True).stdout


FOREIGN = ("protocol", "ip", "pref", "10", "bpf", "bytecode", "1,6 0 0 0,")   # another tool's cBPF


def _hooks(dev: str) -> dict[str, str]:
    return {d: _tc("filter", "show", "dev", dev, d) for d in ("ingress", "egress")}


def test_tc_attach_and_detach_leave_other_tools_filters_and_qdisc_alone(bare_veth: str) -> None:
    dev = bare_veth
    layout = pin_layout_for_test("-tc")
    # another tool's clsact qdisc and filters were there first
    _tc("qdisc", "add", "dev", dev, "clsact")
    for direction in ("ingress", "egress"):
        _tc("filter", "add", "dev", dev, direction, *FOREIGN)
    try:
        dp = EnforcementDatapath(layout)
        report = dp.install(None, [dev])
        assert sorted(report.attached) == [f"tc_egress@{dev}", f"tc_ingress@{dev}"]
        for direction, shown in _hooks(dev).items():
            assert "pref 10 bpf" in shown and "bytecode '1,6 0 0 0'" in shown
            assert f"pref {TC_PREF} bpf" in shown and "handle 0x1 netvigil direct-action" in shown
            assert shown.count(f"name nv_tc_{direction}") == 1
        assert dp.maps is not None
        dp.maps.meta_set(META_SOURCE_HASH, 1)  # as if the BPF source changed since pinning
        report = dp.install(None, [dev])
        assert sorted(report.replaced) == [f"tc_egress@{dev}", f"tc_ingress@{dev}"]
        for direction, shown in _hooks(dev).items():   # replaced in place: still one copy
            assert shown.count(f"name nv_tc_{direction}") == 1 and "pref 10 bpf" in shown
        done = dp.cleanup()
        assert f"removed tc egress filter from {dev}" in done and not any("clsact" in d for d in done)
        for shown in _hooks(dev).values():
            assert "pref 10 bpf" in shown and f"pref {TC_PREF}" not in shown
        assert "qdisc clsact" in _tc("qdisc", "show", "dev", dev)

        # netvigil adds the clsact qdisc; a filter another tool adds later keeps it alive
        _tc("qdisc", "del", "dev", dev, "clsact")
        dp = EnforcementDatapath(layout)
        dp.install(None, [dev])
        _tc("filter", "add", "dev", dev, "egress", *FOREIGN)
        done = dp.cleanup()
        assert not any("clsact" in d for d in done)
        assert "qdisc clsact" in _tc("qdisc", "show", "dev", dev)
        shown = _hooks(dev)
        assert "pref 10 bpf" in shown["egress"] and f"pref {TC_PREF}" not in shown["egress"] + shown["ingress"]

        # our place taken by another tool's filter, or no such interface: typed errors naming it
        _tc("qdisc", "del", "dev", dev, "clsact")
        _tc("qdisc", "add", "dev", dev, "clsact")
        _tc("filter", "add", "dev", dev, "egress", "protocol", "all", "pref", str(TC_PREF), "handle", "1",
            "bpf", "bytecode", "1,6 0 0 0,")
        dp = EnforcementDatapath(layout)
        with pytest.raises(AttachError, match=f"egress priority {TC_PREF} .* on {dev} is taken"):
            dp.install(None, [dev])
        assert "bytecode '1,6 0 0 0'" in _hooks(dev)["egress"]
        with pytest.raises(AttachError, match="no interface 'nv-no-such-if'"):
            dp.install(None, ["nv-no-such-if"])
        _tc("filter", "del", "dev", dev, "egress", "pref", str(TC_PREF))
        _tc("qdisc", "del", "dev", dev, "clsact")
        # and with nothing else on the interface, the clsact qdisc netvigil added goes too
        dp.install(None, [dev])
        done = dp.cleanup()
        assert f"removed clsact qdisc from {dev}" in done
        assert "clsact" not in _tc("qdisc", "show", "dev", dev)
    finally:
        if layout.base.exists():
            remove_all(layout)
