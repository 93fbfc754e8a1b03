"""Each listed bad-input case: a clear, typed error naming file and line:col, fast."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from fuzz_corpus import ALIAS_BOMB
from alerts.errors import AlertsError
from rules import units
from rules.errors import RuleLoadError
from rules.loader import load_rules, load_rules_text
from sensor.cli import main
from sensor.config import config_path, load_config
from sensor.errors import ConfigError, SensorError


def _or_chain_rule(n: int, tail: str = "") -> str:
    terms = " or ".join(f"fd.rport = {1000 + i}" for i in range(n))
    return ("- rule: long\n  desc: d\n  condition: evt.type = connect and (" + terms + ")"
            + tail + "\n  output: o\n  priority: INFO\n")


def test_a_20000_term_or_chain_checks_in_seconds_and_errors_point_into_it() -> None:
    started = time.monotonic()
    ruleset = load_rules_text(_or_chain_rule(20_000), "long.yaml")
    assert [r.name for r in ruleset.rules] == ["long"]
    with pytest.raises(RuleLoadError) as info:
        load_rules_text(_or_chain_rule(20_000, " and proc.nmae = x"), "long.yaml")
    text = str(info.value)
    col = len("  condition: evt.type = connect and (") + len(
        " or ".join(f"fd.rport = {1000 + i}" for i in range(20_000))) + len(") and ") + 1
    assert text.startswith(f"long.yaml:3:{col}: unknown field proc.nmae")
    assert len(text) < 400  # the 400 KB line is shown as a window around the column
    # generous: the quadratic checker took minutes for 5,000 terms
    assert time.monotonic() - started < 60


def test_unbalanced_paren_points_at_the_paren_not_the_next_key() -> None:
    text = ("- rule: r\n  desc: d\n  condition: evt.type = connect and (proc.name = x\n"
            "  output: o\n  priority: INFO\n")
    with pytest.raises(RuleLoadError) as info:
        load_rules_text(text, "bad.yaml")
    assert str(info.value).startswith("bad.yaml:3:37: expected ')' to close this '('")


def test_unbalanced_paren_in_a_folded_condition_points_at_its_line() -> None:
    text = ("- rule: r\n  desc: d\n  condition: >\n    evt.type = connect\n"
            "    and (proc.name = x\n  output: o\n  priority: INFO\n")
    with pytest.raises(RuleLoadError) as info:
        load_rules_text(text, "bad.yaml")
    assert str(info.value).startswith("bad.yaml:5:9:")


@pytest.mark.parametrize("where", ["rules", "config"])
def test_an_alias_bomb_is_refused_in_milliseconds(tmp_path: Path, where: str) -> None:
    started = time.monotonic()
    if where == "rules":
        with pytest.raises(RuleLoadError, match="aliases expand to more than"):
            load_rules_text("- " + ALIAS_BOMB.replace("\n", "\n  ").rstrip() + "\n", "b.yaml")
    else:
        f = tmp_path / "nv.yaml"
        f.write_text("x-anchors:\n  " + ALIAS_BOMB.replace("\n", "\n  ") +
                     "\nrecord:\n  max_segment_size: *i\n")
        with pytest.raises(ConfigError, match=r"nv.yaml:\d+:\d+: YAML aliases expand"):
            load_config(f)
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("raw, message", [
    (b"- rule: r\n  desc: \x1b[31m\n", "r.yaml:2:9: control character U+001B"),
    (b"- rule: r\n  desc: \x00\n", "r.yaml:2:9: control character U+0000"),
    (b"- rule: r\n  desc: caf\xe9\n", "r.yaml:2:12: not UTF-8 text (byte 0xe9"),
    (b"[" * 5000 + b"]" * 5000, "r.yaml:1:101: nested more than 100 levels"),
    (b"- rule: r\n  exceptions:\n  - {name: a, name: b}\n", "r.yaml:3:15: duplicate key 'name'"),
])
def test_rules_file_errors_name_file_and_line(tmp_path: Path, raw: bytes, message: str) -> None:
    f = tmp_path / "r.yaml"
    f.write_bytes(raw)
    with pytest.raises(RuleLoadError) as info:
        load_rules([f])
    assert str(info.value).startswith(str(tmp_path / message))
    assert "\x1b" not in str(info.value) and "\x00" not in str(info.value)


def test_unreadable_rules_directory_and_file_are_reported(tmp_path: Path, capsys) -> None:
    d = tmp_path / "rules.d"
    d.mkdir()
    (d / "a.yaml").symlink_to(tmp_path / "gone.yaml")  # dangling: reported, not skipped
    assert main(["rules", "check", str(d)]) != 0
    out = capsys.readouterr()
    assert str(d / "a.yaml") in out.out + out.err and "Traceback" not in out.out + out.err


@pytest.mark.parametrize("text, message", [
    ("record:\n  enabled: false\nrecord:\n  enabled: true\n",
     "nv.yaml:3:1: duplicate key 'record' (first at line 1)"),
    ("sensor:\n  ringbuff_pages: 64\n", "nv.yaml:2:3: sensor.ringbuff_pages: unknown key"),
    ("alerts:\n  sinks:\n    s:\n      type: stdout\n      delivery:\n        timout: 2s\n",
     "unknown key(s) timout (line 6)"),
    ("enforce:\n  safety:\n    dnss: false\n", "unknown key(s) ['dnss'] (line 3)"),
    ("rules:\n  skip_unsupported: 'no'\n",
     "nv.yaml:2:3: rules.skip_unsupported: expected true or false, got 'no'"),
    ("record:\n  enabled: 1\n", "record.enabled: expected true or false, got 1"),
    ("sensor:\n  ringbuf_pages: 3\n",
     "nv.yaml:2:3: sensor.ringbuf_pages: expected a power of two from 1 to 65536"),
    ("sensor:\n  ringbuf_pages: 0\n", "from 1 to 65536"),
    ("alerts:\n  noise:\n    rate_limit:\n      rate: .nan\n", "at most 1e+06, got nan"),
    ("enforce:\n  max_entries: true\n", "max_entries: expected an integer from 1 to 65536"),
    ("enforce:\n  sweep_interval: .inf\n", "sweep_interval: expected a duration"),
    ("alerts:\n  sinks:\n    h:\n      type: webhook\n"
     "      url: \"http://127.0.0.1:9/a\\r\\nX-Injected: 1\"\n",
     "alerts.sinks.h: the URL contains a control character or space (U+000D)"),
    ("x: \"\\0\"\nrecord: {max_segment_size: '99999999999999999999999999999999999999TiB'}\n",
     "unknown section"),
])
def test_strict_config_errors_name_key_file_and_line(tmp_path: Path, text: str,
                                                     message: str) -> None:
    f = tmp_path / "nv.yaml"
    f.write_text(text)
    with pytest.raises((SensorError, AlertsError)) as info:  # each section's typed error
        load_config(f)
    assert str(f) in str(info.value) and message in str(info.value)


def test_non_utf8_and_deep_configs_fail_cleanly_through_the_cli(tmp_path: Path, capsys) -> None:
    f = tmp_path / "nv.yaml"
    for raw in (b"sensor:\n  x: \xff\n", b"alerts: " + b"{a: " * 5000 + b"1" + b"}" * 5000):
        f.write_bytes(raw)
        for argv in (["run", "--config", str(f)], ["sinks", "test", "--config", str(f)]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"netvigil: error: {f}:") and "Traceback" not in err


def test_one_config_lookup_rule_for_every_command(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("NETVIGIL_CONFIG", raising=False)
    if config_path() is None:  # no /etc/netvigil/netvigil.yaml here: defaults apply
        assert main(["sinks", "test"]) == 0
        assert "1 of 1 sink(s) took the test alert" in capsys.readouterr().out
    f = tmp_path / "env.yaml"
    f.write_text("sensor:\n  ringbuf_pages: 7\n")
    monkeypatch.setenv("NETVIGIL_CONFIG", str(f))
    assert config_path() == f and config_path("other.yaml") == Path("other.yaml")
    for argv in (["run"], ["sinks", "test"]):
        assert main(argv) == 2  # both read $NETVIGIL_CONFIG (run used to ignore it)
        assert f"{f}:2:3: sensor.ringbuf_pages" in capsys.readouterr().err
    monkeypatch.setenv("NETVIGIL_CONFIG", str(tmp_path / "missing.yaml"))
    assert main(["sinks", "test"]) == 2
    assert "missing.yaml: cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("text, seconds", [
    ("90", 90), (90, 90), ("1.5", 1.5), ("500ms", 0.5), ("30s", 30), ("10m", 600),
    ("1h", 3600), ("1d", 86400), ("1w", 604800), ("2 H", 7200)])
def test_one_duration_grammar_across_config_cli_and_rules(tmp_path: Path, text, seconds) -> None:
    from alerts.units import parse_duration as alerts_duration  # noqa: PLC0415
    from rules.enforcement import parse_enforce  # noqa: PLC0415
    from sensor.enforcement.cli import parse_duration as cli_duration  # noqa: PLC0415
    from sensor.recording.config import parse_duration as record_duration  # noqa: PLC0415
    from sensor.replay.timespec import parse_time_spec  # noqa: PLC0415

    assert units.parse_duration(text) == seconds
    assert alerts_duration(text, "w") == record_duration(text, "w") == seconds
    assert cli_duration(str(text)) == seconds
    assert parse_enforce({"action": "deny", "ttl": text}, lambda key: None).ttl_s == seconds
    assert parse_time_spec(str(text), now_ns=10**19) == 10**19 - int(seconds * 10**9)


@pytest.mark.parametrize("bad", ["1y", "-1s", "1e400", "soon", True, float("nan"),
                                 float("inf"), "9" * 40 + "d"])
def test_one_grammar_refuses_the_same_durations_everywhere(bad) -> None:
    from alerts.errors import AlertsConfigError  # noqa: PLC0415
    from alerts.units import parse_duration as alerts_duration  # noqa: PLC0415
    from rules.enforcement import parse_enforce  # noqa: PLC0415
    from rules.errors import EnforceConfigError  # noqa: PLC0415
    from sensor.recording.config import RecordConfigError  # noqa: PLC0415
    from sensor.recording.config import parse_duration as record_duration  # noqa: PLC0415

    with pytest.raises(units.UnitError):
        units.parse_duration(bad)
    with pytest.raises(AlertsConfigError):
        alerts_duration(bad, "w")
    with pytest.raises(RecordConfigError):
        record_duration(bad, "w")
    with pytest.raises(EnforceConfigError):
        parse_enforce({"action": "deny", "ttl": bad}, lambda key: None)


@pytest.mark.parametrize("text, size", [
    (65536, 65536), ("64KiB", 65536), ("64K", 65536), ("64Ki", 65536), ("10MB", 10**7),
    ("1GiB", 1 << 30), ("1 gb", 10**9), ("512B", 512)])
def test_one_size_grammar(text, size) -> None:
    from alerts.units import parse_size as alerts_size  # noqa: PLC0415
    from sensor.recording.config import parse_size as record_size  # noqa: PLC0415

    assert units.parse_size(text) == alerts_size(text, "w") == record_size(text, "w") == size


def _replay_json(rec: Path, capsys, *extra: str) -> tuple[int, list, str]:
    import json  # noqa: PLC0415

    from fuzz_corpus import ok_rules  # noqa: PLC0415

    rules = ok_rules(rec.parent)
    code = main(["replay", str(rec), "--rules", str(rules), "--json", "--events", *extra])
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return code, lines, err


@pytest.mark.parametrize("damage", ["duplicate", "duplicate_middle", "reorder", "foreign"])
def test_copied_renamed_and_foreign_segments_are_reported_and_played_once(
        tmp_path: Path, capsys, damage: str) -> None:
    import fuzz_corpus  # noqa: PLC0415

    clean = fuzz_corpus._recording(lambda rec, rng: None, 1)(tmp_path / "clean")
    _, clean_events, _ = _replay_json(clean, capsys)
    assert main(["replay", "--check", str(clean)]) == 0
    capsys.readouterr()
    bad = fuzz_corpus._recording(getattr(fuzz_corpus, "_" + damage), 1)(tmp_path / "bad")
    assert main(["replay", "--check", str(bad)]) == 1
    err = capsys.readouterr().err
    expected = {"duplicate": "duplicate of", "duplicate_middle": "duplicate of",
                "reorder": "renamed or reordered", "foreign": "belongs to another recording"}
    assert expected[damage] in err and "0 integrity problem(s)" not in err
    code, events, err = _replay_json(bad, capsys, "--strict")
    assert code == 1
    times = [(e.get("evt.time"), e.get("proc.pid"), e.get("evt.type")) for e in events]
    assert len(times) == len(set(times))  # nothing played twice
    if damage in ("duplicate", "reorder"):
        assert times == [(e.get("evt.time"), e.get("proc.pid"), e.get("evt.type"))
                         for e in clean_events]  # the whole history, once, in order


def test_segments_record_which_recording_they_belong_to(tmp_path: Path) -> None:
    from fuzz_corpus import make_recording  # noqa: PLC0415
    from sensor.recording.reader import SegmentReader  # noqa: PLC0415

    rec = make_recording(tmp_path / "r", n=300)
    make_recording(rec, seed=2, n=300)  # a second recorder continues the same recording
    headers = [SegmentReader(p).header for p in sorted(rec.glob("seg-*.nvseg"))]
    assert len({h["chain"] for h in headers}) == 1
    assert [h["seq"] for h in headers] == list(range(1, len(headers) + 1))
    other = make_recording(tmp_path / "o", n=300)
    assert SegmentReader(next(other.glob("seg-*.nvseg"))).header["chain"] != headers[0]["chain"]
