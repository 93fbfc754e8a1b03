"""The event hub: counts, history and bounded reader queues without waiting."""
from __future__ import annotations

from sensor.event_hub import EVENT, EventHub, Reader


def _events(n: int, etype: str = "connect") -> list[dict]:
    return [{"evt.type": etype, "evt.num": i} for i in range(n)]


def test_flush_counts_by_type_and_keeps_a_bounded_history() -> None:
    hub = EventHub(history=5)
    for e in _events(3) + _events(4, "execve"):
        hub.publish(e)
    assert hub.counts()[0] == {} and hub.flush() == 7
    assert hub.counts()[0] == {"connect": 3, "execve": 4}
    assert [e["evt.num"] for e in hub.recent(EVENT)] == [1, 2, 0, 1, 2, 3][-5:]
    assert hub.flush() == 0
    publish = hub.publish   # as the pipeline holds it
    publish({"evt.type": "connect"})
    assert hub.flush() == 1 and hub.counts()[0]["connect"] == 4


def test_a_full_reader_drops_and_counts_while_others_get_everything() -> None:
    hub = EventHub()
    slow, fast, execs = Reader(4), Reader(100), Reader(100, types=["execve"])
    for r in (slow, fast, execs):
        hub.attach(r)
    for e in _events(10) + _events(2, "execve"):
        hub.publish(e)
    hub.flush()
    assert len(slow.queue) == 4 and slow.dropped == 8
    assert len(fast.take()) == 12 and fast.dropped == 0
    assert [item["evt.type"] for _, item in execs.take()] == ["execve", "execve"]
    assert hub.dropped() == 8
    hub.detach(slow)
    assert hub.dropped() == 8 and len(hub.readers) == 2
