"""Rotation, pruning, flushing and crashes of the Recorder."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from sensor.recording import Recorder
from sensor.recording.format import list_segments
from sensor.recording.reader import SegmentReader
from sensor.recording.synthetic import SyntheticNode
from sensor.replay.engine import Replayer


def recorder(directory: Path, **kw) -> Recorder:
    return Recorder(directory, host="node-1", boot_id="b", version="v", **kw)


def feed(rec: Recorder, n: int, seed: int = 5) -> list[dict]:
    events = []
    for kind, x in SyntheticNode(seed=seed, suspicious_every=0).stream(n):
        getattr(rec, kind)(x)
        if kind == "event":
            events.append(x)
    return events


def replay(*paths: Path) -> tuple[list[dict], list[str]]:
    r = Replayer(list(paths))
    events = list(r.events())
    return events, [str(p) for p in r.problems if p.kind != "unclosed"]


def test_rotation_by_size_keeps_every_segment_self_contained(tmp_path: Path) -> None:
    with recorder(tmp_path, max_segment_bytes=6000) as rec:
        events = feed(rec, 2000)
    segs = list_segments(tmp_path)
    assert len(segs) >= 5
    assert [seq for seq, _ in segs] == list(range(1, len(segs) + 1))
    assert all(p.stat().st_size < 6000 + 2000 for _, p in segs)
    assert replay(tmp_path) == (events, [])
    # a later segment alone still gives complete events: its processes are written again
    seq, last = segs[-2]
    alone, problems = replay(last)
    assert problems == [] and alone and all(ev in events for ev in alone)
    assert all("proc.cmdline" in ev and "k8s.pod.name" in ev for ev in alone
               if ev["proc.exec_id"].split(":")[1] not in ("1", "800"))


def test_rotation_by_age(tmp_path: Path) -> None:
    with recorder(tmp_path, max_segment_age_s=0.2, flush_interval_s=0.05) as rec:
        first = feed(rec, 50, seed=1)
        time.sleep(0.6)
        second = feed(rec, 50, seed=2)
    assert len(list_segments(tmp_path)) >= 2
    assert replay(tmp_path)[0] == first + second


def test_pruning_removes_oldest_segments_first(tmp_path: Path) -> None:
    with recorder(tmp_path, max_segment_bytes=5000, max_total_bytes=20000) as rec:
        events = feed(rec, 3000)
    st = rec.stats()
    segs = list_segments(tmp_path)
    total = sum(p.stat().st_size for _, p in segs)
    assert st["segments_pruned"] > 0 and total <= 20000
    assert segs[0][0] == st["segments_pruned"] + 1 and segs[-1][0] == st["segments_written"]
    replayed, problems = replay(tmp_path)
    assert problems == []  # history pruned at the start is not a gap
    assert replayed == events[len(events) - len(replayed):]


def test_data_reaches_disk_within_the_flush_interval(tmp_path: Path) -> None:
    rec = recorder(tmp_path, flush_interval_s=0.1)
    try:
        events = feed(rec, 300)
        time.sleep(0.5)
        copy = tmp_path / "copy"
        copy.mkdir()
        (copy / "seg-0000000001.nvseg").write_bytes(list_segments(tmp_path)[0][1].read_bytes())
        r = Replayer([copy])
        assert list(r.events()) == events
        assert [p.kind for p in r.problems] == ["unclosed"]
    finally:
        rec.close()


def test_crash_loses_at_most_the_unflushed_second_and_restart_links(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from sensor.recording import Recorder
        from sensor.recording.synthetic import SyntheticNode
        rec = Recorder(Path({str(tmp_path)!r}), host="node-1", boot_id="b", version="v",
                       flush_interval_s=0.2)
        items = list(SyntheticNode(seed=5, suspicious_every=0).stream(400))
        for kind, x in items[:300]:
            getattr(rec, kind)(x)
        time.sleep(1.0)          # flushed by the background writer
        for kind, x in items[300:]:
            getattr(rec, kind)(x)
        os._exit(9)              # crash: no close, no footer, last records never flushed
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parent.parent,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 9, proc.stderr
    items = list(SyntheticNode(seed=5, suspicious_every=0).stream(400))
    flushed = [x for kind, x in items[:300] if kind == "event"]
    r = Replayer([tmp_path])
    got = list(r.events())
    assert got[:len(flushed)] == flushed
    assert [p.kind for p in r.problems] == ["unclosed"]
    # the next run continues the sequence and links to what the crashed segment sealed
    with recorder(tmp_path) as rec:
        more = feed(rec, 50, seed=9)
    segs = list_segments(tmp_path)
    assert [s for s, _ in segs] == [1, 2]
    assert SegmentReader(segs[1][1]).header["prev_seq"] == 1
    events, problems = replay(tmp_path)
    assert problems == [] and events == got + more


def test_a_write_error_costs_that_segment_only(tmp_path: Path, monkeypatch) -> None:
    import errno

    from sensor.recording import segment_file

    real_write = segment_file.os.write

    rec = recorder(tmp_path, flush_interval_s=3600)
    before = feed(rec, 200, seed=1)
    rec.flush()
    calls = {"n": 0}

    def full_disk(fd, data):
        calls["n"] += 1
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segment_file.os, "write", full_disk)
    lost = feed(rec, 100, seed=2)
    rec.flush()                      # fails: this segment's remaining records are dropped
    monkeypatch.setattr(segment_file.os, "write", real_write)
    with rec._lock:                  # what the background thread does on its next tick
        rec._need_rotate = False
        rec._rotate()
    after = feed(rec, 100, seed=3)
    rec.close()
    st = rec.stats()
    assert calls["n"] >= 1 and st["write_errors"] == 1
    events, problems = replay(tmp_path)
    assert events[:len(before)] == before and events[-len(after):] == after
    assert not any(ev in events for ev in lost[-50:])
