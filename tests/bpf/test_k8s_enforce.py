"""Live, end to end: an `enforce:` rule scoped to a workload (or a namespace) denies a pod
of it that starts after the rule fired, and leaves the others alone; `netvigil enforce
block --pod/--namespace` (runtime bundles) and `--workload/--selector` (the real
`kubernetes` client against the loopback API server) deny exactly the pods they name, and
a `--workload` block made before any pod of it runs denies the pods that start later.

Real parts: the shared sensor, runc pods laid out as containerd's CRI lays them out
under kubelet's cgroupfs path (with --cgroup-root = a test cgroup the enforcement
programs are attached to), a network namespace the test made (the pods' network: the
"remote" address lives on its loopback), the rule engine, the enforcement agent
(datapath, manager, pod scopes) and the pod cache fed the pods' API objects.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rules.loader import load_rules_text
from sensor import cgroups
from sensor.enforcement.agent import Enforcement
from sensor.enforcement.config import EnforcementConfig
from sensor.enforcement.datapath import remove_all
from sensor.enforcement.keys import ORIGIN_MANUAL
from sensor.enforcement.maps import EnforcementMaps
from sensor.enforcement.pod_scopes import feed
from sensor.enforcement.scope_records import MAP_NAME
from sensor.k8s.enrich import K8sEnricher
from sensor.k8s.pods import PodCache
from sensor.k8s.runtime import RuntimeMetadata
from sensor.pipeline import Pipeline
from tests.k8s_apiserver import FakeApiServer
from tests.k8s_pods import PodHost

PID = os.getpid()
REMOTE = "203.0.113.5"
PORT = 8443
SERVER = textwrap.dedent(f"""
    import socket, sys
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("{REMOTE}", {PORT})); s.listen(16)
    print("READY", flush=True)
    while True:
        c, _ = s.accept(); c.close()
""")
CLIENT = f"""
import socket, time
time.sleep(0.3)
try:
    socket.create_connection(("{REMOTE}", {PORT}), timeout=2).close()
    print("OK")
except OSError as e:
    print("ERR", e.errno)
"""
RULES = f"""
- rule: Web pods must not reach the partner API
  desc: test rule
  condition: evt.type = connect and fd.sip = {REMOTE} and k8s.workload.name = web
  output: "%k8s.pod.name reached %fd.name"
  priority: WARNING
  enforce:
    action: deny
    target: remote
    scope: workload
    ttl: 5m
    mode: enforce
"""


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[PodHost, str]]:
    root = f"/netvigil-test-k8s-{PID}"
    (cgroups.mount() / root.lstrip("/")).mkdir(exist_ok=True)
    host = PodHost(tmp_path / "node", cgroup_root=root)
    server = None
    try:
        ns = host.netns(f"nvk{PID}", [f"{REMOTE}/32"])
        server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER],
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "READY"
        yield host, ns
    finally:
        if server is not None:
            server.kill()
            server.wait()
        host.close()
        try:
            (cgroups.mount() / root.lstrip("/")).rmdir()
        except OSError:
            pass


@pytest.fixture
def agent(node) -> Iterator[Enforcement]:
    host, _ns = node
    base = Path(f"/sys/fs/bpf/netvigil-test-{PID}-k8s")
    enf = Enforcement(EnforcementConfig(pin_path=base, cgroup=host.cgroup_root, dns=False,
                                        kubernetes_api=False, persist=False))
    try:
        enf.start()
        enf.verdicts = []  # type: ignore[attr-defined]
        enf.open_verdicts(enf.verdicts.append)  # type: ignore[attr-defined]
        yield enf
    finally:
        try:
            enf.cleanup()
        finally:
            if base.exists():
                remove_all(enf.datapath.layout)
            shutil.rmtree(base, ignore_errors=True)


def _client(pod, name: str, pump=None) -> str:
    """Run the client in a new container of `pod`, polling the sensor meanwhile (events are
    decoded while the container's cgroup exists, as on a live node)."""
    container = pod.start(["/usr/bin/python3", "-c", CLIENT], name=name)
    deadline = time.monotonic() + 20
    while pump is not None and container.proc.poll() is None and time.monotonic() < deadline:
        pump(0.05)
    code, out, err = container.wait()
    assert code == 0, err
    return out.strip()


@contextlib.contextmanager
def _wired(live, host, agent, rules_text: str, name: str) -> Iterator[tuple[PodCache, Pipeline, Callable[[float], None]]]:
    """The live sensor feeding a Pipeline with pod enrichment and enforcement, wired as
    `netvigil run` wires them; yields (pod cache, pipeline, pump) and unwires on exit."""
    pods = PodCache()
    enricher = K8sEnricher(RuntimeMetadata(host.roots), pods, hold_s=2.0)
    feed(agent.pod_scopes, enricher, pods)
    pipeline = Pipeline(hostname="node-1", ruleset=load_rules_text(rules_text, name),
                        on_event=live.events.append, k8s=enricher, enforcement=agent)
    live.sensor.attach_enricher(enricher)
    previous = live.sensor.on_event
    live.sensor.on_event = pipeline

    def pump(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            live.sensor.poll(50)
            pipeline.tick()
            agent.poll(0)

    try:
        yield pods, pipeline, pump
    finally:
        live.sensor.on_event = previous
        live.sensor.attach_enricher(None)


def test_workload_scope_denies_a_pod_of_the_workload_started_after_the_rule_fired(live, node, agent) -> None:
    host, ns = node
    with _wired(live, host, agent, RULES, "k8s-enforce.yaml") as (pods, pipeline, pump):
        first = host.pod("web-5d8f9c-aaaaa", "shop", owner=("ReplicaSet", "web-5d8f9c"), netns=ns)
        pods.upsert(first.api_object())
        assert _client(first, "web", pump) == "OK"          # nothing denies it yet: the rule fires
        pump(1.5)
        conns = [e for e in live.events if e.get("evt.type") == "connect" and e.get("fd.sip") == REMOTE]
        assert pipeline.alerts >= 1 and pipeline.enforcement_requests >= 1, {k: v for k, v in conns[0].items() if k.startswith(("k8s", "container", "proc.cgroup", "proc.exepath", "proc.pname"))}

        later = host.pod("web-5d8f9c-bbbbb", "shop", owner=("ReplicaSet", "web-5d8f9c"), netns=ns)
        pods.upsert(later.api_object())                # scheduled on this node after the rule fired
        later.make_cgroup()                            # kubelet makes the pod cgroup first
        later_id = cgroups.cgroup_id(later.cgroup_dir)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(k.scope == later_id for k in agent.manager.entries()):
            pump(0.1)
        assert any(k.scope == later_id for k in agent.manager.entries()), agent.pod_scopes.groups()
        assert _client(later, "web", pump) == "ERR 1"        # EPERM from the connect4 hook
        pump(0.3)
        assert any(v.get("netvigil.verdict") == "deny" and v.get("netvigil.scope_cgroup_id") == later_id
                   for v in agent.verdicts), agent.verdicts[-3:]

        other = host.pod("batch-7c6b5-ccccc", "shop", owner=("ReplicaSet", "batch-7c6b5"), netns=ns)
        pods.upsert(other.api_object())
        pump(0.3)
        assert _client(other, "batch", pump) == "OK"         # another workload of the namespace


def test_enforce_block_by_pod_and_namespace_from_the_command_line(live, node, agent) -> None:
    host, ns = node
    target = host.pod("api-0", "payments", netns=ns)
    bystander = host.pod("api-0", "shop", netns=ns)
    for pod in (target, bystander):   # pods are found through their runtime bundles
        pod.start(["/bin/sleep", "30"], name="sidecar")
    netvigil = str(Path(sys.executable).with_name("netvigil"))
    base = ["--pin-path", str(agent.datapath.layout.base)]

    def block(*where: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([netvigil, "enforce", *base, "block", *where, "--cidr", f"{REMOTE}/32",
                               "--host-root", str(host.prefix), "--ttl", "5m"],
                              capture_output=True, text=True, timeout=60)

    missing = block("--pod", "payments/nope")
    assert missing.returncode != 0 and "no running pod on this node matches" in missing.stderr
    assert "Traceback" not in missing.stderr
    done = block("--pod", "payments/api-0")
    assert done.returncode == 0, done.stderr
    assert _client(target, "app") == "ERR 1"
    assert _client(bystander, "app") == "OK"
    assert block("--namespace", "shop").returncode == 0
    assert _client(bystander, "app") == "ERR 1"


def test_enforce_block_by_workload_and_selector_asks_the_api_server(live, node, agent, tmp_path) -> None:
    host, ns = node
    web = [host.pod(f"web-5d8f9c-{s}", "shop", labels={"app": "web", "tier": "front"},
                    owner=("ReplicaSet", "web-5d8f9c"), netns=ns) for s in ("aaaaa", "bbbbb")]
    batch = host.pod("batch-7c6b5-ccccc", "shop", labels={"app": "batch", "tier": "back"},
                     owner=("ReplicaSet", "batch-7c6b5"), netns=ns)
    elsewhere = host.pod("web-5d8f9c-ddddd", "other", labels={"app": "web", "tier": "front"},
                         owner=("ReplicaSet", "web-5d8f9c"), netns=ns)
    pods = [*web, batch, elsewhere]
    for pod in pods:
        pod.start(["/bin/sleep", "60"], name="sidecar")
    with FakeApiServer() as api:
        for pod in pods:
            api.create("pods", pod.api_object("node-1"))
        api.create("pods", host.pod("web-5d8f9c-zzzzz", "shop", labels={"app": "web"},
                                    owner=("ReplicaSet", "web-5d8f9c")).api_object("node-2"))  # not this node's
        env = {**os.environ, "KUBECONFIG": str(api.kubeconfig(tmp_path / "kubeconfig")), "NODE_NAME": "node-1",
               "HOME": "/nonexistent"}
        netvigil = str(Path(sys.executable).with_name("netvigil"))
        base = ["--pin-path", str(agent.datapath.layout.base)]

        def enforce(*args: str, env: dict[str, str] = env) -> subprocess.CompletedProcess[str]:
            return subprocess.run([netvigil, "enforce", *base, *args], capture_output=True, text=True,
                                  timeout=60, env=env)

        def block(*where: str) -> subprocess.CompletedProcess[str]:
            return enforce("block", *where, "--cidr", f"{REMOTE}/32", "--host-root", str(host.prefix), "--ttl", "5m")

        done = block("--workload", "shop/Deployment/web")
        assert done.returncode == 0, done.stderr
        with EnforcementMaps(agent.datapath.layout) as maps:
            scopes = {k.scope for k in maps.entries()}
        assert {cgroups.cgroup_id(p.cgroup_dir) for p in web} <= scopes
        assert cgroups.cgroup_id(batch.cgroup_dir) not in scopes
        assert [_client(p, "app") for p in (*web, batch, elsewhere)] == ["ERR 1", "ERR 1", "OK", "OK"]

        assert enforce("flush").returncode == 0
        done = block("--selector", "shop/tier=back")
        assert done.returncode == 0, done.stderr
        assert [_client(p, "app") for p in (*web, batch)] == ["OK", "OK", "ERR 1"]

        missing = block("--workload", "shop/nope")    # no pod yet: stored for pods that start later
        assert missing.returncode == 0 and "no pod matches now" in missing.stdout, missing.stderr
    down = block("--workload", "shop/web")               # the API server is gone
    assert down.returncode != 0 and "API server" in down.stderr and "Traceback" not in down.stderr


QUIET_RULES = """
- rule: Nothing here
  desc: the pipeline runs, no rule enforces
  condition: evt.type = connect and fd.sport = 1
  output: "%fd.name"
  priority: NOTICE
"""


def test_enforce_block_by_workload_covers_a_pod_that_starts_later(live, node, agent, tmp_path) -> None:
    """`netvigil enforce block --workload` while the agent runs and no pod of the workload
    is on the node: the block is stored; a pod of it that starts afterwards is denied, one
    of another workload is not; `unblock` stops covering new pods; `cleanup` removes the store."""
    host, ns = node
    netvigil = str(Path(sys.executable).with_name("netvigil"))
    layout = agent.datapath.layout
    with FakeApiServer() as api, _wired(live, host, agent, QUIET_RULES, "quiet.yaml") as (pods, _pipeline, pump):
        env = {**os.environ, "KUBECONFIG": str(api.kubeconfig(tmp_path / "kubeconfig")), "NODE_NAME": "node-1",
               "HOME": "/nonexistent"}

        def enforce(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([netvigil, "enforce", "--pin-path", str(layout.base), *args],
                                  capture_output=True, text=True, timeout=60, env=env)

        where = ("--workload", "shop/Deployment/web", "--cidr", f"{REMOTE}/32", "--host-root", str(host.prefix))
        done = enforce("block", *where, "--ttl", "5m")
        assert done.returncode == 0, done.stderr
        assert "no pod matches now; pods that start later are covered while an agent runs" in done.stdout
        listed = [json.loads(line) for line in enforce("list", "--json").stdout.splitlines()]
        assert [(r["type"], r["scope"]) for r in listed] == [("scope_record", "workload shop/Deployment/web")]

        later = host.pod("web-5d8f9c-bbbbb", "shop", owner=("ReplicaSet", "web-5d8f9c"), netns=ns)
        pods.upsert(later.api_object())                # scheduled on this node after the block
        later.make_cgroup()
        later_id = cgroups.cgroup_id(later.cgroup_dir)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(k.scope == later_id for k in agent.manager.entries()):
            pump(0.1)
        (val,) = [v for k, v in agent.manager.entries().items() if k.scope == later_id]
        assert val.origin == ORIGIN_MANUAL and val.expires_ns > 0
        assert _client(later, "web", pump) == "ERR 1"        # EPERM from the connect4 hook
        other = host.pod("batch-7c6b5-ccccc", "shop", owner=("ReplicaSet", "batch-7c6b5"), netns=ns)
        pods.upsert(other.api_object())
        other.make_cgroup()
        pump(0.5)
        assert _client(other, "batch", pump) == "OK"         # another workload of the namespace

        gone = enforce("unblock", *where)
        assert gone.returncode == 0 and "1 scope record" in gone.stdout, gone.stdout + gone.stderr
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and agent.pod_scopes.groups():
            pump(0.1)
        assert agent.pod_scopes.groups() == []
        after = host.pod("web-5d8f9c-ddddd", "shop", owner=("ReplicaSet", "web-5d8f9c"), netns=ns)
        pods.upsert(after.api_object())
        after.make_cgroup()
        pump(0.5)
        assert _client(after, "web", pump) == "OK"           # unblocked: new pods are not covered

        enforce("block", *where)
        assert Path(layout.map_path(MAP_NAME)).exists()
        assert enforce("cleanup").returncode == 0
        assert not Path(layout.map_path(MAP_NAME)).exists()


def test_namespace_scope_denies_a_pod_of_the_namespace_started_after_the_rule_fired(live, node, agent) -> None:
    host, ns = node
    rules = RULES.replace("k8s.workload.name = web", "k8s.ns.name = shop").replace("scope: workload", "scope: namespace")
    with _wired(live, host, agent, rules, "k8s-enforce-ns.yaml") as (pods, pipeline, pump):
        first = host.pod("web-5d8f9c-aaaaa", "shop", owner=("ReplicaSet", "web-5d8f9c"), netns=ns)
        pods.upsert(first.api_object())
        assert _client(first, "web", pump) == "OK"          # the rule fires on this one
        pump(1.5)
        assert pipeline.enforcement_requests >= 1 and agent.pod_scopes.groups()

        later = host.pod("cron-28d1f-eeeee", "shop", owner=("Job", "cron-28d1f"), netns=ns)   # another workload
        pods.upsert(later.api_object())
        later.make_cgroup()
        later_id = cgroups.cgroup_id(later.cgroup_dir)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(k.scope == later_id for k in agent.manager.entries()):
            pump(0.1)
        assert _client(later, "cron", pump) == "ERR 1"

        outside = host.pod("web-5d8f9c-fffff", "other", owner=("ReplicaSet", "web-5d8f9c"), netns=ns)
        pods.upsert(outside.api_object())
        pump(0.3)
        assert _client(outside, "web", pump) == "OK"         # the same workload name, another namespace
