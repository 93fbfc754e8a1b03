"""`netvigil rules check|test|fields` through the real CLI entry point."""
from __future__ import annotations

import json
from pathlib import Path

from sensor.cli import main
from rules import DEFAULT_RULES_DIR

DEFAULT = str(DEFAULT_RULES_DIR)
RULES = """- macro: spawned
  condition: evt.type = execve
- rule: nc run
  desc: d
  condition: spawned and proc.name = nc
  output: "nc %proc.cmdline"
  priority: warning
- rule: root run
  desc: d
  condition: spawned and user.uid = 0
  output: "root %proc.name"
  priority: info
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_check_ok(capsys) -> None:
    assert main(["rules", "check", DEFAULT]) == 0
    assert "OK: 15 rules loaded (15 enabled), 0 skipped" in capsys.readouterr().out


def test_check_reports_errors_with_position_caret_and_did_you_mean(tmp_path, capsys) -> None:
    path = write(tmp_path, "bad.yaml", RULES.replace("proc.name = nc", "proc.nmae = nc")
                 .replace("spawned and user", "spawnd and user"))
    assert main(["rules", "check", path]) == 1
    err = capsys.readouterr().err
    assert f"{path}:5:26: unknown field proc.nmae (did you mean proc.name?)" in err
    assert "      condition: spawned and proc.nmae = nc\n" in err
    assert "                             ^" in err
    assert "unknown macro spawnd (did you mean spawned?)" in err
    assert "2 errors" in err


def test_check_unsupported_and_skip(tmp_path, capsys) -> None:
    path = write(tmp_path, "f.yaml", RULES + "- rule: tty\n  desc: d\n  condition: proc.tty != 0"
                 "\n  output: o\n  priority: info\n")
    assert main(["rules", "check", path]) == 1
    assert "rule 'tty' uses proc.tty" in capsys.readouterr().err
    assert main(["rules", "check", "--skip-unsupported", path]) == 0
    out = capsys.readouterr().out
    assert "skipped rule 'tty': unsupported proc.tty" in out
    assert "2 rules loaded (2 enabled), 1 skipped" in out


def test_check_yaml_error(tmp_path, capsys) -> None:
    path = write(tmp_path, "y.yaml", "- rule: [\n")
    assert main(["rules", "check", path]) == 1
    assert f"{path}:2:1: invalid YAML" in capsys.readouterr().err


def test_test_prints_alerts_then_compares_with_expected(tmp_path, capsys) -> None:
    rules = write(tmp_path, "r.yaml", RULES)
    events = write(tmp_path, "e.jsonl", "\n".join(json.dumps(e) for e in [
        {"evt.type": "execve", "evt.num": 10, "proc.name": "nc", "user.uid": 0},
        {"evt.type": "execve", "evt.num": 11, "proc.name": "ls", "user.uid": 1000},
        {"evt.type": "execve", "proc.name": "ls", "user.uid": 0},
    ]) + "\n")
    assert main(["rules", "test", rules, "--events", events]) == 0
    out = capsys.readouterr().out
    expected = [{"rule": "nc run", "evt.num": 10}, {"rule": "root run", "evt.num": 10},
                {"rule": "root run", "evt.num": 3}]
    assert [json.loads(line) for line in out.splitlines()] == expected

    good = write(tmp_path, "expect.jsonl", out)
    assert main(["rules", "test", rules, "--events", events, "--expect", good]) == 0
    assert "OK: 3 alert(s) as expected" in capsys.readouterr().out

    yaml_expect = write(tmp_path, "expect.yaml",
                        "- {rule: nc run, evt.num: 10}\n- {rule: root run, evt.num: 11}\n")
    assert main(["rules", "test", rules, "--events", events, "--expect", yaml_expect]) == 1
    out = capsys.readouterr().out
    assert "- expected, did not fire: 'root run' on evt.num 11" in out
    assert "+ fired, not expected:   'root run' on evt.num 10" in out
    assert "+ fired, not expected:   'root run' on evt.num 3" in out


def test_test_bad_events_file_is_a_clear_error(tmp_path, capsys) -> None:
    rules = write(tmp_path, "r.yaml", RULES)
    events = write(tmp_path, "e.jsonl", '{"evt.type": "execve"}\n{oops\n')
    assert main(["rules", "test", rules, "--events", events]) == 2
    err = capsys.readouterr().err
    assert f"netvigil: error: {events}:2:2: invalid JSON" in err
    assert "Traceback" not in err


def test_fields_table_and_json(capsys) -> None:
    assert main(["rules", "fields"]) == 0
    out = capsys.readouterr().out
    assert "fd.snet" in out and "proc.aname[N]" in out and "k8s.pod.label[KEY]" in out
    assert main(["rules", "fields", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    byname = {r["name"]: r for r in rows}
    assert byname["fd.sport"]["type"] == "port"
    assert byname["evt.arg.status"]["event_types"] == "procexit"
