"""Recording round trip: what the sensor saw comes back identical from the segments."""
from __future__ import annotations

from pathlib import Path

import pytest

from sensor.process_table import ProcessRecord
from sensor.recording import Recorder
from sensor.recording.decoder import IT_ALERT, IT_EVENT, IT_PROCESS, IT_VERDICT, SegmentDecoder
from sensor.recording.errors import RecorderClosedError, RecordingError
from sensor.recording.format import list_segments
from sensor.recording.reader import SegmentReader
from sensor.recording.synthetic import SyntheticNode
from sensor.replay.engine import Replayer


def record(directory: Path, items, **kw) -> Recorder:
    rec = Recorder(directory, host="node-1", boot_id="boot-1", version="0.1.0", **kw)
    for kind, x in items:
        getattr(rec, kind)(x)
    rec.close()
    return rec


def read_items(path: Path) -> list[tuple]:
    reader = SegmentReader(path)
    dec = SegmentDecoder(reader.header)
    out = []
    for blk in reader.blocks():
        out += dec.decode(blk.records, lambda i, e: pytest.fail(f"record {i}: {e}"))
    assert reader.problems == []
    return out


def test_replayed_events_equal_live_events_and_stay_small(tmp_path: Path) -> None:
    node = SyntheticNode(seed=7, suspicious_every=500)
    items = list(node.stream(3000))
    live = [x for kind, x in items if kind == "event"]
    rec = record(tmp_path, items)
    replayed = list(Replayer([tmp_path]).events())
    assert replayed == live
    size = sum(p.stat().st_size for _, p in list_segments(tmp_path))
    assert size / len(live) <= 60, f"{size / len(live):.1f} bytes per event"
    st = rec.stats()
    assert st["events"] == len(live) and st["processes"] > 100 and st["write_errors"] == 0


def test_process_records_round_trip_and_updates_are_kept(tmp_path: Path) -> None:
    p = ProcessRecord("b:10:1", 10, 1, None, "app", "app", "/app", ["--x", "y z"], 1000, 1000,
                      77, "abcdef012345", 1, meta={"k8s.pod.name": "p", "k8s.pod.labels": {"a": "b"}})
    record(tmp_path, [("process", p), ("process", p),  # unchanged: stored once
                      ("process", {**p.to_dict(), "meta": {"k8s.pod.name": "p2"}})])
    procs = [x[1] for x in read_items(list_segments(tmp_path)[0][1]) if x[0] == IT_PROCESS]
    assert procs == [p.to_dict(), {**p.to_dict(), "meta": {"k8s.pod.name": "p2"}}]


def test_event_of_unknown_process_keeps_its_own_fields(tmp_path: Path) -> None:
    ev = {"evt.type": "connect", "evt.time": 5, "proc.exec_id": "never-seen", "proc.name": "x",
          "proc.pid": 9, "thread.tid": 9, "fd.cip": "::1", "fd.cport": 1, "fd.sip": "::1",
          "fd.sport": 2, "fd.name": "::1:1->::1:2", "k8s.pod.labels": {"app": "y"}}
    odd = {"evt.type": "clone", "evt.time": 6, "evt.rawres": 4242, "weird": [1, {"a": None}],
           "evt.res": {"not": "a const"}}
    # an event that cannot be table-encoded between two sequence-numbered ones
    seq1 = {"evt.type": "connect", "evt.num": 10, "evt.res": "SUCCESS"}
    seq2 = {"evt.type": "connect", "evt.num": 11, "evt.res": {"odd": 1}}
    seq3 = {"evt.type": "connect", "evt.num": 12, "evt.res": "SUCCESS"}
    sent = [ev, odd, {"evt.type": "x"}, seq1, seq2, seq3]
    record(tmp_path, [("event", e) for e in sent])
    events = [x[2] for x in read_items(list_segments(tmp_path)[0][1]) if x[0] == IT_EVENT]
    assert events == sent


def test_varying_would_be_constants_stay_compact(tmp_path: Path) -> None:
    """clone's evt.rawres is a child pid; errno names vary: neither may bloat the file."""
    sent = []
    for i in range(400):
        sent.append({"evt.type": "clone", "evt.time": 10 * i, "evt.num": i, "evt.dir": "<",
                     "evt.res": "SUCCESS", "evt.rawres": 5000 + i, "thread.tid": 7})
        sent.append({"evt.type": "connect", "evt.time": 10 * i + 5, "evt.num": i, "evt.dir": "<",
                     "evt.res": f"E{i % 60}", "evt.rawres": -(i % 60), "thread.tid": 7})
    record(tmp_path, [("event", e) for e in sent])
    path = list_segments(tmp_path)[0][1]
    assert [x[2] for x in read_items(path) if x[0] == IT_EVENT] == sent
    assert path.stat().st_size / len(sent) < 20


def test_alerts_and_verdicts_are_recorded(tmp_path: Path) -> None:
    alert = {"rule": "R", "priority": "Warning", "output": "o", "time": "2026-01-01T00:00:00Z",
             "output_fields": {"fd.sip": "1.2.3.4"}, "tags": ["a"]}
    verdict = {"netvigil.verdict": "deny", "netvigil.rule": "R", "fd.rip": "1.2.3.4"}
    record(tmp_path, [("alert", alert), ("verdict", verdict)])
    items = read_items(list_segments(tmp_path)[0][1])
    assert (IT_ALERT, alert) in items and (IT_VERDICT, verdict) in items


def test_header_and_footer_describe_the_segment(tmp_path: Path) -> None:
    node = SyntheticNode(seed=2)
    items = list(node.stream(200))
    record(tmp_path, items)
    reader = SegmentReader(list_segments(tmp_path)[0][1])
    for _ in reader.blocks():
        pass
    h = reader.header
    assert (h["format"], h["host"], h["boot_id"], h["version"], h["seq"]) == (
        1, "node-1", "boot-1", "0.1.0", 1)
    assert reader.footer is not None
    assert reader.footer["first_ns"] < reader.footer["last_ns"]
    assert reader.footer["counts"]["events"] == sum(1 for k, _ in items if k == "event")


def test_malformed_input_is_counted_not_raised(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, host="h", boot_id="b", version="v")
    rec.event({("not", "a", "name"): 1})                 # not a field name
    rec.process({"pid": 3})                              # no exec_id
    rec.event({"evt.type": "ok", "evt.time": 1, "evt.num": 2**70})  # beyond 64 bits: as text
    rec.close()
    assert rec.stats()["encode_errors"] == 2
    assert [x[2] for x in read_items(list_segments(tmp_path)[0][1]) if x[0] == IT_EVENT] == [
        {"evt.type": "ok", "evt.time": 1, "evt.num": str(2**70)}]


def test_recorder_refuses_use_after_close_and_a_second_writer(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, host="h", boot_id="b", version="v")
    with pytest.raises(RecordingError, match="another recorder"):
        Recorder(tmp_path, host="h", boot_id="b", version="v")
    rec.close()
    with pytest.raises(RecorderClosedError):
        rec.event({"evt.type": "x"})


def test_the_sensor_thread_only_queues_and_a_backlog_stays_bounded(tmp_path: Path) -> None:
    """Events are encoded by the writer thread, not in the caller; when the writer falls
    behind, the caller encodes the backlog itself: nothing is dropped, memory is bounded."""
    items = list(SyntheticNode(seed=9).stream(3000))
    rec = Recorder(tmp_path, host="n", boot_id="b", version="v", flush_interval_s=3600,
                   max_inbox=200)
    peak = 0
    for kind, x in items[:150]:
        getattr(rec, kind)(x)
    assert rec.stats()["inbox"] == 150 and rec.stats()["events"] == 0  # not encoded yet
    for kind, x in items[150:]:
        getattr(rec, kind)(x)
        peak = max(peak, len(rec._inbox))
    st = rec.stats()
    assert peak <= 200 and st["inbox_full"] > 0
    rec.close()
    st = rec.stats()
    assert st["dropped_events"] == 0 and st["inbox"] == 0
    live = [x for kind, x in items if kind == "event"]
    assert list(Replayer([tmp_path]).events()) == live


def test_per_event_k8s_fields_are_kept_and_pod_fields_come_from_the_process(tmp_path: Path, capsys) -> None:
    p = ProcessRecord("b:11:1", 11, 1, None, "curl", "curl", "/usr/bin/curl", [], 0, 0, 77,
                      "abcdef012345", 1, meta={"k8s.pod.name": "web-1", "k8s.ns.name": "shop",
                                               "container.image": "nginx:1.25"})
    ev = {"proc.exec_id": "b:11:1", "proc.name": "curl", "k8s.pod.name": "web-1", "k8s.ns.name": "shop",
          "container.image": "nginx:1.25", "evt.type": "connect", "evt.time": 5, "fd.rip": "10.96.0.1",
          "k8s.peer.svc.name": "kubernetes", "k8s.peer.svc.ns.name": "default"}
    record(tmp_path, [("process", p), ("event", ev)])
    import json

    from sensor.cli import main

    def replay(where: str) -> list[dict]:
        capsys.readouterr()
        assert main(["replay", str(tmp_path), "--where", where, "--events", "--json"]) in (0, None)
        return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]

    assert replay("k8s.ns.name = other") == []
    replayed = replay("k8s.ns.name = shop")
    assert len(replayed) == 1
    assert replayed[0]["k8s.peer.svc.name"] == "kubernetes" and replayed[0]["container.image"] == "nginx:1.25"
