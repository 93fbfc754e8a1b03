"""`netvigil replay`: the alerts of recorded history, as the live sensor gave them."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from alerts.model import ALERT_ID, format_time_ns
from rules.loader import load_rules
from sensor.cli import main
from sensor.pipeline import Pipeline
from sensor.recording import Recorder
from sensor.recording.synthetic import SyntheticNode
from sensor.replay.progress import Progress
from rules import DEFAULT_RULES_DIR

DEFAULT_RULES = DEFAULT_RULES_DIR
EXTRA_RULE = """
- rule: DNS Query from Infra Namespace
  desc: test rule added after the fact
  condition: evt.type = sendto and fd.sport = 53 and k8s.ns.name = infra
  output: DNS query from %k8s.pod.name (connection=%fd.name)
  priority: NOTICE
  tags: [test]
"""


class AlertsOut:
    """The router's place in the live pipeline: what `netvigil run` hands its sinks."""

    def __init__(self) -> None:
        self.alerts: list[dict] = []

    def submit(self, alert) -> None:
        self.alerts.append(alert.to_dict())


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> tuple[Path, list[dict], list[dict]]:
    """A synthetic node through the live sensor's own pipeline (recorder, rules, alerts)."""
    directory = tmp_path_factory.mktemp("rec")
    events, out = [], AlertsOut()
    with Recorder(directory, host="node-1", boot_id="b", version="v",
                  max_segment_bytes=40_000) as rec:
        pipeline = Pipeline(hostname="node-1", ruleset=load_rules([DEFAULT_RULES]), router=out,
                            recorder=rec)
        for kind, x in SyntheticNode(seed=21, suspicious_every=400).stream(4000):
            if kind == "event":
                events.append(dict(x))
                pipeline(x)
            else:
                getattr(rec, kind)(x)
    assert pipeline.alerts == len(out.alerts)
    return directory, events, out.alerts


def without_uuid(alerts: list[dict]) -> list[dict]:
    """An alert without what is new for every alert built (uuid and its idempotency key)."""
    return [{**{k: v for k, v in a.items() if k != "uuid"},
             "output_fields": {k: v for k, v in a["output_fields"].items() if k != ALERT_ID}}
            for a in alerts]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["replay", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_replay_gives_the_alerts_the_live_sensor_gave(recording, capsys) -> None:
    directory, _, live_alerts = recording
    assert len(live_alerts) >= 10
    code, out, err = cli(capsys, str(directory))
    assert code == 0
    replayed = [json.loads(line) for line in out.splitlines()]
    assert without_uuid(replayed) == without_uuid(live_alerts)
    assert f"{len(live_alerts)} alerts; 0 integrity problem(s)" in err
    code, out, _ = cli(capsys, str(directory), "--recorded-alerts", "--json")
    assert [json.loads(line) for line in out.splitlines()] == live_alerts


def test_a_new_rule_finds_new_alerts_in_old_history(recording, capsys, tmp_path) -> None:
    directory, events, live_alerts = recording
    extra = tmp_path / "extra.yaml"
    extra.write_text(EXTRA_RULE)
    code, out, _ = cli(capsys, str(directory), "--rules", str(DEFAULT_RULES), "--rules",
                       str(extra), "--json")
    alerts = [json.loads(line) for line in out.splitlines()]
    new = [a for a in alerts if a["rule"] == "DNS Query from Infra Namespace"]
    expected = [e for e in events if e["evt.type"] == "sendto" and e.get("k8s.ns.name") == "infra"]
    assert len(new) == len(expected) > 0
    assert new[0]["priority"] == "Notice" and new[0]["hostname"] == "node-1"
    assert new[0]["output_fields"]["fd.name"] == expected[0]["fd.name"]
    assert len(alerts) == len(live_alerts) + len(new)


def test_since_until_and_where_select_events(recording, capsys) -> None:
    directory, events, _ = recording
    lo, hi = events[1000]["evt.time"], events[1999]["evt.time"]
    code, out, err = cli(capsys, str(directory), "--events", "--json",
                         "--since", format_time_ns(lo), "--until", format_time_ns(hi))
    assert [json.loads(line) for line in out.splitlines()] == events[1000:2000]
    assert "replayed 1,000 of" in err
    code, out, _ = cli(capsys, str(directory), "--events", "--json", "--where",
                       "k8s.ns.name = infra and evt.type = sendto")
    got = [json.loads(line) for line in out.splitlines()]
    assert got == [e for e in events if e["evt.type"] == "sendto" and e.get("k8s.ns.name") == "infra"]


def test_relative_times_and_user_mistakes(recording, capsys) -> None:
    directory, _, _ = recording
    code, out, err = cli(capsys, str(directory), "--events", "--since", "2h")
    assert code == 0 and out == ""  # the synthetic history is older than 2 hours
    code, _, err = cli(capsys, str(directory), "--where", "fd.sport = = 1")
    assert code == 2 and "netvigil: error: --where:" in err and "Traceback" not in err
    code, _, err = cli(capsys, str(directory), "--since", "last tuesday")
    assert code == 2 and "--since: cannot read time 'last tuesday'" in err
    code, _, err = cli(capsys, str(directory), "--since", "1h", "--until", "2h")
    assert code == 2 and "is after --until" in err


def test_progress_line_only_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        p = Progress(1000, lambda: 5000, stream, delay_s=0, interval_s=0)
        p(500, 1000)
        p.close()
    assert "replay:  50.0% of 0.0 MB, 5,000 events" in tty.getvalue()
    assert pipe.getvalue() == ""


def test_recordings_of_several_nodes_merge_by_time(tmp_path, capsys) -> None:
    """Two nodes' directories: events interleave by time; alerts carry their own host."""
    ruleset = load_rules([DEFAULT_RULES])
    expected = []
    for i, host in enumerate(("node-a", "node-b")):
        node = SyntheticNode(seed=30 + i, suspicious_every=300)
        node.t += i * 7_000  # the two nodes' clocks interleave
        with Recorder(tmp_path / host, host=host, boot_id=f"b{i}", version="v") as rec:
            for kind, x in node.stream(900):
                getattr(rec, kind)(x)
                if kind == "event":
                    expected += [(m.time_ns, host, m.rule) for m in ruleset.evaluate(x)]
    code, out, _ = cli(capsys, str(tmp_path / "node-a"), str(tmp_path / "node-b"), "--json")
    alerts = [json.loads(line) for line in out.splitlines()]
    got = [(format_time_ns(t), h, r) for t, h, r in sorted(expected)]
    assert [(a["time"], a["hostname"], a["rule"]) for a in alerts] == got
    assert {a["hostname"] for a in alerts} == {"node-a", "node-b"}
    code, out, _ = cli(capsys, str(tmp_path / "node-a"), str(tmp_path / "node-b"), "--events",
                       "--json")
    times = [json.loads(line)["evt.time"] for line in out.splitlines()]
    assert len(times) > 1700 and times == sorted(times)


def test_event_types_no_rule_looks_at_are_skipped_without_changing_the_rest(recording) -> None:
    from sensor.replay.engine import Replayer, unwatched_types

    directory, events, _ = recording
    skip = unwatched_types(load_rules([DEFAULT_RULES]))
    assert skip("clone") and not skip("connect") and not skip("procexit")
    r = Replayer([directory], skip_event_type=skip)
    assert list(r.events()) == [e for e in events if e["evt.type"] != "clone"]
    assert r.stats["events_unwatched"] == sum(1 for e in events if e["evt.type"] == "clone") > 0
