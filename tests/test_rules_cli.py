"""`netvigil rules check|test|fields` through the real CLI entry point."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

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


# --- rules check on a terminal and in a pipe: the snippet, the caret, colour or not ---

ESC = "\x1b["
PAREN = ("- rule: shell\n  desc: d\n  condition: evt.type = execve and (proc.name in (bash, sh)\n"
         "  output: o\n  priority: warning\n")
UNKNOWN = ("- rule: curl\n  desc: d\n  condition: evt.type = connect and proc.nmae = curl\n"
           "  output: o\n  priority: notice\n")
BAD_YAML = "- rule: r\n  desc: d\n  condition: evt.type = connect\n   output: x\n  priority: notice\n"


def _check_on(stderr_tty: bool, path: str, *, env: dict[str, str] | None = None,
              color: str = "auto", columns: int = 120) -> str:
    """stderr of `netvigil --color C rules check PATH` run as a process, its stderr a pipe or
    a pseudo-terminal this wide."""
    full_env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | (env or {})
    argv = [sys.executable, "-m", "sensor.cli", "--color", color, "rules", "check", path]
    if not stderr_tty:
        done = subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=60)
        assert done.returncode == 1
        return done.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=slave, env=full_env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 1
    return b"".join(chunks).decode().replace("\r\n", "\n")


def _without_escapes(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _snippet(err: str, location: str) -> tuple[str, str]:
    """The source line and the caret line printed under the error at `location`."""
    lines = err.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(location))
    return lines[at + 1], lines[at + 2]


@pytest.mark.parametrize("text,where,message,token", [
    (PAREN, ":3:36:", "expected ')' to close this '('", "("),
    (UNKNOWN, ":3:37:", "unknown field proc.nmae (did you mean proc.name?)", "proc.nmae"),
    (BAD_YAML, ":4:10:", "invalid YAML: mapping values are not allowed here", ":"),
])
def test_check_error_shows_the_line_and_underlines_the_offending_token(
        tmp_path, text: str, where: str, message: str, token: str) -> None:
    path = write(tmp_path, "bad.yaml", text)
    err = _check_on(False, path)
    assert ESC not in err
    assert f"{path}{where} {message}" in err
    line, caret = _snippet(err, f"{path}{where}")
    source_line = text.splitlines()[int(where.split(":")[1]) - 1]
    assert line == "    " + source_line
    col = int(where.split(":")[2]) - 1
    assert line[4 + col:].startswith(token)
    assert caret == " " * (4 + col) + "^" + "~" * (len(token) - 1)


def test_check_on_a_terminal_is_coloured_with_the_same_text(tmp_path) -> None:
    path = write(tmp_path, "bad.yaml", UNKNOWN)
    coloured = _check_on(True, path)
    assert ESC in coloured
    assert _without_escapes(coloured) == _check_on(False, path)


def test_check_no_color_on_a_terminal_has_no_escape_codes(tmp_path) -> None:
    path = write(tmp_path, "bad.yaml", UNKNOWN)
    for err in (_check_on(True, path, env={"NO_COLOR": "1"}), _check_on(True, path, color="never")):
        assert ESC not in err
        assert err == _check_on(False, path)


def test_check_color_always_colours_a_pipe(tmp_path) -> None:
    path = write(tmp_path, "bad.yaml", PAREN)
    err = _check_on(False, path, color="always")
    assert ESC in err
    line, caret = _snippet(_without_escapes(err), f"{path}:3:36:")
    assert caret.index("^") == line.index("(proc.name")


def test_check_long_line_on_a_narrow_terminal_keeps_the_caret_under_the_token(tmp_path) -> None:
    terms = " or ".join(f"proc.name = p{i}" for i in range(40))
    cond = f"{terms} or proc.nmae = x or {terms}"
    path = write(tmp_path, "long.yaml", f"- rule: r\n  desc: d\n  condition: {cond}\n"
                 "  output: o\n  priority: info\n")
    err = _without_escapes(_check_on(True, path, columns=60))
    line, caret = _snippet(err, f"{path}:3:")
    assert len(line) <= 60 and len(caret) <= 60
    assert line.startswith("    ...") and line.endswith("...")
    assert line[caret.index("^"):].startswith("proc.nmae")
