"""AlertRouter end to end against real loopback HTTP receivers."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_alerts_support import (HangingReceiver, Receiver, config_for, make_alert, wait_until)

from alerts.model import Alert
from alerts.router import AlertRouter


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def _uuids(requests) -> list[str]:
    return [req.json()["uuid"] for req in requests]


def test_sink_down_for_a_while_then_back_receives_every_alert_in_order(
        receiver: Receiver, tmp_path: Path) -> None:
    cfg = config_for({"hook": {"type": "webhook", "url": receiver.url,
                               "delivery": {"queue_size": 5}}})
    router = AlertRouter(cfg, tmp_path)
    router.start()
    alerts = [make_alert(i) for i in range(60)]
    try:
        for a in alerts[:10]:
            router.submit(a)
        receiver.wait_for(10)
        receiver.stop()  # the receiver goes down
        for a in alerts[10:50]:
            router.submit(a)
        wait_until(lambda: router.stats()["hook"]["state"] == "failing", what="sink failing")
        for a in alerts[50:]:
            router.submit(a)
        stats = router.stats()["hook"]
        assert stats["spool_pending"] == 50  # nothing waits in memory while the sink is down
        assert list(tmp_path.joinpath("hook").glob("*.jsonl"))
        time.sleep(0.2)  # a few failed retries with backoff
        receiver.restart()
        got = receiver.wait_for(60)
        wait_until(lambda: router.stats()["hook"]["spool_pending"] == 0, what="spool drained")
    finally:
        router.stop(2)
    assert _uuids(got) == [a.uuid for a in alerts]  # every alert, once, in order
    stats = router.stats()["hook"]
    assert stats["delivered"] == 60 and stats["failed"] >= 1 and stats["dead_lettered"] == 0


def test_agent_restart_with_non_empty_spool_loses_nothing(receiver: Receiver, tmp_path: Path) -> None:
    receiver.stop()  # sink down during the first run
    cfg = config_for({"hook": {"type": "webhook", "url": receiver.url,
                               "delivery": {"queue_size": 1000}}})
    first = AlertRouter(cfg, tmp_path)
    first.start()
    alerts = [make_alert(i) for i in range(40)]
    for a in alerts:
        first.submit(a)
    first.stop(0.5)
    assert first.stats()["hook"]["spool_pending"] == 40
    assert first.stats()["hook"]["delivered"] == 0

    receiver.restart()
    second = AlertRouter(cfg, tmp_path)  # the agent comes back
    second.start()
    try:
        got = receiver.wait_for(40)
        wait_until(lambda: second.stats()["hook"]["spool_pending"] == 0, what="spool drained")
    finally:
        second.stop(2)
    assert _uuids(got) == [a.uuid for a in alerts]
    assert not list(tmp_path.joinpath("hook").glob("*.jsonl"))  # delivered segments are removed


def test_restart_in_the_middle_of_draining_keeps_order(receiver: Receiver, tmp_path: Path) -> None:
    """Queue items of a stopped run go before what was already spooled."""
    receiver.stop()
    cfg = config_for({"hook": {"type": "webhook", "url": receiver.url,
                               "delivery": {"queue_size": 3}}})
    alerts = [make_alert(i) for i in range(20)]
    for chunk in (alerts[:10], alerts[10:]):
        router = AlertRouter(cfg, tmp_path)
        router.start()
        for a in chunk:
            router.submit(a)
        router.stop(0.3)
    receiver.restart()
    router = AlertRouter(cfg, tmp_path)
    router.start()
    try:
        got = receiver.wait_for(20)
    finally:
        router.stop(2)
    assert _uuids(got) == [a.uuid for a in alerts]


def test_429_retry_after_is_honoured(receiver: Receiver, tmp_path: Path) -> None:
    answers = iter([(429, {"Retry-After": "1"}, b"slow down")])
    receiver.respond = lambda req: next(answers, (200, {}, b"ok"))
    router = AlertRouter(config_for({"hook": {"type": "webhook", "url": receiver.url}}), tmp_path)
    router.start()
    try:
        router.submit(make_alert(0))
        receiver.wait_for(2, timeout=5)
    finally:
        router.stop(2)
    gap = receiver.arrival_times[1] - receiver.arrival_times[0]
    assert 0.95 <= gap < 2.0  # backoff base is 20 ms: only Retry-After explains a 1 s wait
    assert receiver.requests[0].json()["uuid"] == receiver.requests[1].json()["uuid"]
    assert router.stats()["hook"]["delivered"] == 1


def test_400_lands_in_the_dead_letter_file_with_the_reason(receiver: Receiver, tmp_path: Path) -> None:
    def respond(req):
        if "#1" in req.json()["output"]:
            return 400, {}, b'{"error": "schema mismatch"}'
        return 200, {}, b"ok"

    receiver.respond = respond
    router = AlertRouter(config_for({"hook": {"type": "webhook", "url": receiver.url}}), tmp_path)
    router.start()
    alerts = [make_alert(i) for i in range(3)]
    try:
        for a in alerts:
            router.submit(a)
        receiver.wait_for(3)
        wait_until(lambda: router.stats()["hook"]["delivered"] == 2, what="deliveries")
    finally:
        router.stop(2)
    lines = (tmp_path / "hook" / "dead-letter.jsonl").read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["sink"] == "hook"
    assert "HTTP 400" in entry["reason"] and "schema mismatch" in entry["reason"]
    assert Alert.from_dict(entry["alert"]) == alerts[1]
    assert router.stats()["hook"]["dead_lettered"] == 1
    assert len(receiver.requests) == 3  # a 400 is not retried


def test_hanging_sink_delays_neither_submit_nor_other_sinks(receiver: Receiver, tmp_path: Path) -> None:
    hang = HangingReceiver()
    cfg = config_for({"stuck": {"type": "webhook", "url": hang.url, "delivery": {"timeout": "2s"}},
                      "good": {"type": "falcosidekick", "url": receiver.url}})
    router = AlertRouter(cfg, tmp_path)
    router.start()
    alerts = [make_alert(i) for i in range(20)]
    try:
        t0 = time.perf_counter()
        for a in alerts:
            router.submit(a)
        submit_s = time.perf_counter() - t0
        got = receiver.wait_for(20, timeout=1.5)  # well before the stuck sink's 2 s timeout
        good_s = time.perf_counter() - t0
    finally:
        t1 = time.perf_counter()
        router.stop(0.3)
        stop_s = time.perf_counter() - t1
        hang.stop()
    assert submit_s < 0.1
    assert good_s < 1.5
    assert stop_s < 1.0  # stop() does not wait for the hanging receiver's timeout
    assert _uuids(got) == [a.uuid for a in alerts]
    stuck = router.stats()["stuck"]
    assert stuck["delivered"] == 0 and stuck["spool_pending"] == 20  # kept for the next run


def test_routing_by_priority_rule_and_tag(tmp_path: Path) -> None:
    receivers = {name: Receiver() for name in ("crit", "net", "noc2")}
    try:
        cfg = config_for({
            "crit": {"type": "webhook", "url": receivers["crit"].url, "min_priority": "Error"},
            "net": {"type": "webhook", "url": receivers["net"].url, "tags": {"include": ["network"]}},
            "noc2": {"type": "webhook", "url": receivers["noc2"].url,
                     "rules": {"exclude": ["*C2*"]}, "tags": {"exclude": ["noisy"]}},
        })
        router = AlertRouter(cfg, tmp_path)
        router.start()
        sent = [make_alert(0, priority="Critical", tags=("network",)),
                make_alert(1, priority="Warning", tags=("process",), rule="Shell in container"),
                make_alert(2, priority="Error", tags=("noisy",), rule="Shell in container"),
                make_alert(3, priority="Notice", tags=("network",))]
        for a in sent:
            router.submit(a)
        got = {"crit": receivers["crit"].wait_for(2), "net": receivers["net"].wait_for(2),
               "noc2": receivers["noc2"].wait_for(1)}
        router.stop(2)
        time.sleep(0.05)
        assert _uuids(got["crit"]) == [sent[0].uuid, sent[2].uuid]
        assert _uuids(got["net"]) == [sent[0].uuid, sent[3].uuid]
        assert _uuids(receivers["noc2"].requests) == [sent[1].uuid]
        assert router.stats()["noc2"]["filtered"] == 3
    finally:
        for r in receivers.values():
            r.stop()


def test_noise_control_through_the_router_accounts_for_every_alert(
        receiver: Receiver, tmp_path: Path) -> None:
    cfg = config_for({"hook": {"type": "webhook", "url": receiver.url}},
                     noise={"aggregate": {"window": "60s", "key_fields": ["proc.exepath"]},
                            "rate_limit": {"enabled": False}})
    router = AlertRouter(cfg, tmp_path)
    router.start()
    for i in range(42):
        router.submit(make_alert(i))  # same rule, same exe: identical for the aggregator
    receiver.wait_for(1)
    router.stop(2)  # flushes the pending summary
    got = [r.json() for r in receiver.wait_for(2)]
    assert len(got) == 2
    assert got[1]["output"].endswith("(and 40 more in the last 60 s)")
    assert got[1]["output_fields"]["netvigil.suppressed_count"] == 40
    assert sum(1 + g["output_fields"].get("netvigil.suppressed_count", 0) for g in got) == 42
    assert router.noise_stats()["aggregated"] == 41
