"""The durable per-sink spool: order, restart, crash, corruption, limits."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_alerts_support import Receiver, config_for, make_alert

from alerts.errors import SpoolError, SpoolFullError
from alerts.router import AlertRouter
from alerts.spool import Spool

ROOT = Path(__file__).resolve().parent.parent


def _drain(spool: Spool, batch: int = 7) -> list[bytes]:
    out = []
    while spool.pending:
        recs = spool.peek(batch)
        assert recs, "pending records but nothing to read"
        out.extend(r.data for r in recs)
        spool.ack(recs)
    return out


def test_fifo_across_segments_and_consumed_segments_are_deleted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=64, fsync="never").open()
    records = [f"record-{i:03d}".encode() for i in range(50)]
    for r in records:
        spool.append(r)
    assert spool.pending == 50
    assert len(list(tmp_path.glob("*.jsonl"))) > 5
    assert _drain(spool) == records
    spool.close()
    assert len(list(tmp_path.glob("*.jsonl"))) <= 1  # only the (empty) active segment may remain


def test_reopen_resumes_after_the_last_acknowledged_record(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=100).open()
    records = [f"r{i}".encode() for i in range(30)]
    for r in records:
        spool.append(r)
    spool.ack(spool.peek(12))
    spool.close()
    again = Spool(tmp_path).open()
    assert again.pending == 18
    assert _drain(again) == records[12:]
    again.close()


def test_prepend_goes_before_everything_spooled(tmp_path: Path) -> None:
    spool = Spool(tmp_path).open()
    for r in (b"c", b"d"):
        spool.append(r)
    spool.ack(spool.peek(1))  # "c" delivered
    spool.prepend([b"a", b"b"])
    spool.close()
    again = Spool(tmp_path).open()
    assert _drain(again) == [b"a", b"b", b"d"]
    again.close()


def test_record_cut_short_by_a_crash_is_reported_not_lost(tmp_path: Path) -> None:
    spool = Spool(tmp_path).open()
    spool.append(b'{"ok": 1}')
    spool.close()
    seg = next(tmp_path.glob("*.jsonl"))
    with open(seg, "ab") as fh:
        fh.write(b'{"cut": ')  # a crash in the middle of a write
    again = Spool(tmp_path).open()
    assert again.pending == 2
    recs = again.peek(10)
    assert [r.partial for r in recs] == [False, True]
    assert recs[1].data == b'{"cut": '
    again.close()


def test_full_spool_and_second_process_are_errors(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=100).open()
    spool.append(b"x" * 60)
    with pytest.raises(SpoolFullError):
        spool.append(b"y" * 60)
    with pytest.raises(SpoolError, match="in use"):
        Spool(tmp_path).open()
    spool.close()
    Spool(tmp_path).open().close()  # free again once closed


def test_corrupt_record_goes_to_dead_letter_and_the_rest_is_delivered(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool" / "hook"
    spool = Spool(spool_dir).open()
    good = [make_alert(i) for i in range(3)]
    spool.append(good[0].json_bytes)
    spool.append(b"{not json")
    for a in good[1:]:
        spool.append(a.json_bytes)
    spool.close()
    receiver = Receiver()
    router = AlertRouter(config_for({"hook": {"type": "webhook", "url": receiver.url}}),
                         tmp_path / "spool")
    router.start()
    try:
        got = receiver.wait_for(3)
    finally:
        router.stop(2)
        receiver.stop()
    assert [r.json()["uuid"] for r in got] == [a.uuid for a in good]
    dead = [json.loads(x) for x in (spool_dir / "dead-letter.jsonl").read_text().splitlines()]
    assert dead[0]["record"] == "{not json" and "corrupt spool record" in dead[0]["reason"]


CRASHING_AGENT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_alerts_support import config_for, make_alert, wait_until
    from alerts.router import AlertRouter
    router = AlertRouter(config_for({{"hook": {{"type": "webhook", "url": {url!r},
                                              "delivery": {{"queue_size": 1000, "fsync": "interval",
                                                           "fsync_interval": "50ms"}}}}}}),
                         {spool!r})
    router.start()
    for i in range(50):
        router.submit(make_alert(i))
    wait_until(lambda: router.stats()["hook"]["spool_pending"] == 50)
    print("READY", flush=True)
    time.sleep(60)
""")


def test_agent_killed_with_sigkill_loses_nothing_once_the_sink_failed(tmp_path: Path) -> None:
    receiver = Receiver()
    receiver.stop()  # the sink is down while the agent runs
    script = CRASHING_AGENT.format(tests=str(ROOT / "tests"), url=receiver.url,
                                   spool=str(tmp_path / "spool"))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"READY"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    receiver.restart()
    router = AlertRouter(config_for({"hook": {"type": "webhook", "url": receiver.url}}),
                         tmp_path / "spool")
    router.start()
    try:
        got = receiver.wait_for(50)
    finally:
        router.stop(2)
        receiver.stop()
    bodies = [r.json() for r in got]
    assert [b["output"] for b in bodies] == [make_alert(i).output for i in range(50)]  # in order
    assert len({b["uuid"] for b in bodies}) == 50


def test_full_spool_dead_letters_instead_of_dropping(tmp_path: Path) -> None:
    receiver = Receiver()
    receiver.stop()
    cfg = config_for({"hook": {"type": "webhook", "url": receiver.url,
                               "delivery": {"spool_max_bytes": "8KiB", "queue_size": 2}}})
    router = AlertRouter(cfg, tmp_path)
    router.start()
    try:
        for i in range(40):
            router.submit(make_alert(i))
    finally:
        router.stop(0.3)
    stats = router.stats()["hook"]
    assert stats["dead_lettered"] > 0 and stats["spool_pending"] > 0
    assert stats["dead_lettered"] + stats["spool_pending"] == 40  # every alert is somewhere
    dead = [json.loads(x) for x in (tmp_path / "hook" / "dead-letter.jsonl").read_text().splitlines()]
    assert len(dead) == stats["dead_lettered"]
    assert all("is full" in d["reason"] for d in dead)
