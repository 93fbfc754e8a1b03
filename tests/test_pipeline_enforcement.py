"""The pipeline hands enforcement requests to a bounded queue: a stalled manager never
holds up the hot path, drops are counted and shown."""
from __future__ import annotations

import threading
from types import SimpleNamespace

from rules.loader import load_rules_text
from sensor.agent import SensorStats
from sensor.enforcement.request_queue import RequestQueue
from sensor.pipeline import Pipeline
from sensor.run_command import _status

RULES = """
- rule: C2 contact
  desc: d
  condition: evt.type = connect and fd.sip = 203.0.113.9
  output: "c2 %fd.sip"
  priority: critical
  enforce: {action: deny, scope: process, ttl: 1m, mode: enforce}
"""


def _event(i: int) -> dict:
    return {"evt.type": "connect", "evt.time": i, "fd.sip": "203.0.113.9", "fd.rip": "203.0.113.9",
            "fd.rport": 443, "fd.l4proto": "tcp", "proc.cgroup_id": 500}


class StalledManager:
    """A manager whose first submit hangs until released (a slow cgroup walk, a stuck map)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.got: list = []

    def submit(self, req) -> None:
        self.entered.set()
        self.release.wait()
        self.got.append(req)


def test_a_stalled_manager_does_not_hold_up_the_pipeline_and_drops_are_counted() -> None:
    manager = StalledManager()
    q = RequestQueue(manager.submit, capacity=8)
    q.start()
    pipeline = Pipeline(hostname="h", ruleset=load_rules_text(RULES), enforcement=q)
    try:
        pipeline(_event(0))
        assert manager.entered.wait(10), "the worker never took the first request"
        for i in range(1, 1001):   # the manager is stuck: every call must still return
            pipeline(_event(i))
        assert pipeline.alerts == 1001 and pipeline.enforcement_requests == 1001
        st = q.stats()
        # one request in the stuck submit, 8 queued, the rest dropped (and counted)
        assert (st["offered"], st["depth"], st["dropped"]) == (1001, 8, 1001 - 1 - 8)
        line = _status(SimpleNamespace(stats=lambda: SensorStats()), pipeline, None,
                       SimpleNamespace(queue=q))
        assert "enforce_dropped=992" in line
    finally:
        manager.release.set()
        q.stop()
    # once the manager recovers, what was queued reaches it, in order
    assert [r.event["evt.time"] for r in manager.got] == list(range(9))
    assert q.stats()["submitted"] == 9


def test_a_failing_submit_is_counted_and_the_worker_goes_on() -> None:
    seen: list = []

    def submit(req) -> None:
        seen.append(req)
        if len(seen) == 1:
            raise RuntimeError("boom")

    q = RequestQueue(submit, capacity=4)
    q.start()
    pipeline = Pipeline(hostname="h", ruleset=load_rules_text(RULES), enforcement=q)
    pipeline(_event(1))
    pipeline(_event(2))
    q.stop()
    assert len(seen) == 2 and (q.stats()["failed"], q.stats()["submitted"]) == (1, 1)
