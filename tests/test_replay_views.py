"""Investigation views: --tree, --connections, --export and --enforce-preview."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from sensor.cli import main
from sensor.process_table import ProcessRecord, ProcessTable
from sensor.recording import Recorder
from sensor.recording.synthetic import SyntheticNode
from sensor.replay.engine import Replayer
from sensor.replay.views import ProcessTree

S = 1_000_000_000
T0 = 1_780_000_000 * S
PREVIEW_RULES = """
- rule: Metadata Access
  desc: a container talks to the metadata service
  condition: evt.type = connect and fd.sip = 169.254.169.254 and container.id != host
  output: metadata service contacted (pod=%k8s.pod.name)
  priority: WARNING
  enforce:
    action: deny
    target: remote
    scope: container
    ttl: 10m
- rule: Block Backend Database Range
  desc: nobody reaches the legacy database range
  condition: evt.num < 0
  output: never
  priority: NOTICE
  enforce:
    action: deny
    static:
      cidrs: [10.96.1.0/24]
      ports: [5432]
      protocol: tcp
"""


class Scenario:
    """A web pod whose shell runs curl against the metadata service; an api pod."""

    def __init__(self) -> None:
        self.table = ProcessTable()
        self.items: list[tuple[str, object]] = []
        self.num = 0

    def proc(self, pid: int, parent: ProcessRecord | None, name: str, args: list[str],
             cid: str = "host", pod: str | None = None) -> ProcessRecord:
        meta = ({"k8s.ns.name": "shop", "k8s.pod.name": pod, "container.name": pod.split("-")[0],
                 "container.image": f"acme/{pod.split('-')[0]}:1"} if pod else {})
        rec = ProcessRecord(f"b:{pid}:{pid}", pid, parent.pid if parent else 0,
                            parent.exec_id if parent else None, name, name, f"/usr/bin/{name}",
                            args, 1000, 1000, 5000 + pid, cid, T0 + pid, meta=meta)
        self.table.add(rec)
        self.items.append(("process", rec))
        return rec

    def event(self, rec: ProcessRecord, t_s: float, fields: dict) -> None:
        self.num += 1
        ev = {**self.table.fields(rec.exec_id), "evt.time": T0 + int(t_s * S),
              "evt.num": self.num, "evt.dir": "<", "thread.tid": rec.pid, **fields}
        self.items.append(("event", ev))

    def connect(self, rec: ProcessRecord, t_s: float, src: str, dst: str, port: int) -> None:
        self.event(rec, t_s, SyntheticNode._net("connect", "tcp", src, 40000 + self.num, dst,
                                                port, True))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    sc = Scenario()
    init = sc.proc(1, None, "systemd", [])
    shim = sc.proc(800, init, "containerd-shim", ["-namespace", "k8s.io"])
    nginx = sc.proc(100, shim, "nginx", ["-g", "daemon off;"], "aaaaaaaaaaaa", "web-5d8f7-abcde")
    api = sc.proc(300, shim, "python3", ["app.py"], "bbbbbbbbbbbb", "api-6c9d8-fghij")
    sc.event(nginx, 0.5, SyntheticNode._net("listen", "tcp", "0.0.0.0", 0, "0.0.0.0", 8080, False))
    sc.event(nginx, 1.0, SyntheticNode._net("accept4", "tcp", "10.0.0.5", 51000, "10.244.0.9",
                                            8080, False))
    sh = sc.proc(200, nginx, "sh", ["-c", "curl http://169.254.169.254/"], "aaaaaaaaaaaa",
                 "web-5d8f7-abcde")
    sc.event(sh, 1.1, {"evt.type": "execve", "evt.res": "SUCCESS", "evt.rawres": 0})
    curl = sc.proc(201, sh, "curl", ["http://169.254.169.254/"], "aaaaaaaaaaaa", "web-5d8f7-abcde")
    sc.event(curl, 1.2, {"evt.type": "execve", "evt.res": "SUCCESS", "evt.rawres": 0})
    for t in (2, 3, 4):
        sc.connect(curl, t, "10.244.0.9", "169.254.169.254", 80)
    sc.connect(curl, 5, "10.244.0.9", "10.96.1.7", 5432)
    sc.connect(api, 6, "10.244.0.10", "169.254.169.254", 80)
    sc.connect(api, 7, "10.244.0.10", "10.96.1.9", 5432)
    sc.connect(api, 8, "10.244.0.10", "10.96.1.9", 5432)
    sc.connect(api, 9, "10.244.0.10", "10.96.2.1", 5432)
    directory = tmp_path_factory.mktemp("views")
    with Recorder(directory, host="node-1", boot_id="b", version="v") as rec:
        for kind, x in sc.items:
            getattr(rec, kind)(x)
    return directory


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["replay", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return code, out, err


def _find(nodes: list[dict], name: str) -> dict:
    for n in nodes:
        if n["name"] == name:
            return n
        found = _find(n["children"], name) if n["children"] else None
        if found:
            return found
    return {}


def test_tree_shows_selected_processes_under_their_ancestors(recorded, capsys) -> None:
    _, out, _ = cli(capsys, str(recorded), "--tree", "--json", "--where",
                    "fd.sip = 169.254.169.254")
    tree = json.loads(out)["processes"]
    assert [n["name"] for n in tree] == ["systemd"]
    curl = _find(tree, "curl")
    assert curl["cmdline"] == "curl http://169.254.169.254/"
    assert curl["k8s.pod.name"] == "web-5d8f7-abcde" and curl["container_id"] == "aaaaaaaaaaaa"
    assert curl["outbound"] == [{"proto": "tcp", "remote": "169.254.169.254:80",
                                 "result": "SUCCESS", "count": 3,
                                 "first": "2026-05-28T20:26:42.000Z",
                                 "last": "2026-05-28T20:26:44.000Z"}]
    assert _find(tree, "sh")["events"] == 0  # ancestor shown for context only
    assert _find(tree, "python3")["outbound"][0]["count"] == 1


def test_tree_text_lists_connections_and_listeners(recorded) -> None:
    r = Replayer([recorded], keep_records=True)
    buf = io.StringIO()
    tree = ProcessTree(buf, r.records.get, as_json=False)
    for ev in r.events():
        tree.add(ev)
    tree.finish()
    text = buf.getvalue()
    assert "nginx [100] /usr/bin/nginx \u2014 nginx -g daemon off; \u2014 container aaaaaaaaaaaa " \
           "pod shop/web-5d8f7-abcde image acme/web:1 uid 1000" in text
    assert "listening tcp 0.0.0.0:8080 (listen)" in text
    assert "<- tcp 10.244.0.9:8080 from 1 peer(s), 1x" in text
    assert "-> tcp 169.254.169.254:80 SUCCESS 3x" in text
    assert text.index("nginx [100]") < text.index("sh [200]") < text.index("curl [201]")


def test_connections_timeline_with_processes(recorded, capsys) -> None:
    _, out, _ = cli(capsys, str(recorded), "--connections", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["type"] for r in rows] == ["listen", "accept4"] + ["connect"] * 8
    assert [r["time_ns"] for r in rows] == sorted(r["time_ns"] for r in rows)
    first_curl = rows[2]
    assert (first_curl["direction"], first_curl["remote"], first_curl["local"]) == (
        "out", "169.254.169.254:80", f"10.244.0.9:{first_curl['local'].split(':')[1]}")
    assert first_curl["process"] == "curl" and first_curl["pod"] == "web-5d8f7-abcde"
    assert first_curl["parents"] == ["sh", "nginx", "containerd-shim", "systemd"]
    assert rows[1]["direction"] == "in" and rows[1]["remote"] == "10.0.0.5:51000"


def test_export_writes_events_with_full_ancestry(recorded, capsys, tmp_path) -> None:
    target = tmp_path / "out.jsonl"
    _, out, err = cli(capsys, str(recorded), "--export", str(target), "--where", "proc.name = curl")
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(lines) == 5 and out == "" and "5 events exported" in err
    anc = lines[0]["netvigil.ancestry"]
    assert [a["name"] for a in anc] == ["sh", "nginx", "containerd-shim", "systemd"]
    assert anc[0]["cmdline"] == "sh -c curl http://169.254.169.254/"
    assert anc[1]["k8s.pod.name"] == "web-5d8f7-abcde"
    assert lines[0]["proc.cmdline"] == "curl http://169.254.169.254/"


def test_enforce_preview_groups_would_be_denials_by_workload(recorded, capsys, tmp_path) -> None:
    rules = tmp_path / "new.yaml"
    rules.write_text(PREVIEW_RULES)
    _, out, _ = cli(capsys, str(recorded), "--rules", str(rules), "--enforce-preview", "--json")
    rep = {r["rule"]: r for r in json.loads(out)["rules"]}
    meta = rep["Metadata Access"]
    # every match installs (or refreshes) an entry for the container; the 2nd and 3rd
    # curl connections fall under the entry the 1st created; other containers do not
    assert (meta["detected"], meta["denied"], meta["mode"]) == (4, 2, "audit")
    assert {w["workload"]: (w["detected"], w["denied"]) for w in meta["workloads"]} == {
        "pod shop/web": (3, 2), "pod shop/api": (1, 0)}
    web = next(w for w in meta["workloads"] if w["workload"] == "pod shop/web")
    assert web["destinations"] == {"169.254.169.254:80/tcp": 2}
    static = rep["Block Backend Database Range (static)"]
    assert static["enforcement"] == "static deny remote endpoint 10.96.1.0/24 ports 5432 tcp"
    assert {w["workload"]: w["denied"] for w in static["workloads"]} == {
        "pod shop/web": 1, "pod shop/api": 2}
    # the same, readable
    code = main(["replay", str(recorded), "--rules", str(rules), "--enforce-preview", "--text"])
    text = capsys.readouterr().out
    assert code == 0 and 'rule "Metadata Access": deny remote endpoint, scope container' in text
    assert "matched 4 time(s); would have denied 2 connection(s)" in text
    assert "pod shop/web                                   3       2  169.254.169.254:80/tcp (2)" \
        in text


def test_replaced_images_are_forgotten_after_the_retention_period(tmp_path) -> None:
    """Long replays keep a bounded process table: an exec'd-over image is retired."""
    sc = Scenario()
    init = sc.proc(1, None, "systemd", [])
    old = sc.proc(50, init, "sh", ["-c", "exec app"])
    sc.event(old, 1, {"evt.type": "execve", "evt.res": "SUCCESS", "evt.rawres": 0})
    new = ProcessRecord("b:50:new", 50, 1, init.exec_id, "app", "app", "/usr/bin/app", [],
                        0, 0, 1, "host", T0 + 2 * S)
    sc.items.append(("process", new))
    sc.table.add(new)
    for t in (2, 100):  # the second event is long after the retention (30 s) of the old image
        sc.event(new, t, {"evt.type": "execve", "evt.res": "SUCCESS", "evt.rawres": 0})
    with Recorder(tmp_path, host="h", boot_id="b", version="v") as rec:
        for kind, x in sc.items:
            getattr(rec, kind)(x)
    r = Replayer([tmp_path])
    events = list(r.events())
    assert [e["proc.name"] for e in events] == ["sh", "app", "app"]
    assert r.table.get(old.exec_id) is None and r.table.get("b:50:new") is not None


def test_views_keep_a_bounded_number_of_process_records(tmp_path: Path) -> None:
    """A long recording of short-lived processes: the records kept for --tree,
    --connections and --export stay bounded (the rebuilt table's retention plus the
    ancestors they need), and every exported event still has its full ancestry."""
    sc = Scenario()
    init = sc.proc(1, None, "systemd", [])
    shim = sc.proc(800, init, "containerd-shim", ["-namespace", "k8s.io"])
    n = 2000
    for i in range(n):  # one process per second: starts, connects, exits
        p = sc.proc(10_000 + i, shim, "curl", ["http://10.96.0.1/"], "aaaaaaaaaaaa", "web-1-x")
        p.start_ns = T0 + i * S
        sc.connect(p, i + 0.1, "10.244.0.9", "10.96.0.1", 80)
        sc.event(p, i + 0.5, {"evt.type": "procexit", "evt.arg.status": 0})
    with Recorder(tmp_path, host="node-1", boot_id="b", version="v",
                  max_segment_bytes=50_000, flush_interval_s=3600) as rec:
        for i, (kind, x) in enumerate(sc.items):
            getattr(rec, kind)(x)
            if i % 60 == 59:
                rec.flush()  # a block per 20 processes, as a once-a-second flush makes
    r = Replayer([tmp_path], keep_records=True)
    out = io.StringIO()
    from sensor.replay.views import Exporter
    exporter = Exporter(out, r.records.get)
    sizes = []
    for ev in r.events():
        exporter.add(ev)
        sizes.append(len(r.records))
    assert r.stats["processes"] >= n
    # ~30 s of exited processes (the table's retention), one block, 2 ancestors
    assert max(sizes) <= r.records.peak < 80
    exported = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(exported) == 2 * n
    assert all([a["name"] for a in e["netvigil.ancestry"]] == ["containerd-shim", "systemd"]
               for e in exported)
