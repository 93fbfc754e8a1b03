"""The agent's config file and the CLI's handling of user mistakes."""
from __future__ import annotations

import pytest

from sensor.cli import main
from sensor.config import load_config
from sensor.errors import ConfigError


def test_defaults_without_a_file() -> None:
    cfg = load_config(None)
    assert cfg.record_dir == "/var/lib/netvigil/recordings" and cfg.rules_paths == []


def test_sections_are_read(tmp_path) -> None:
    f = tmp_path / "nv.yaml"
    f.write_text("rules:\n  paths: [/etc/netvigil/rules]\n  enforce_mode: enforce\n"
                 "record:\n  enabled: false\nalerts:\n  sinks: {}\nsensor:\n  hooks: cgroup\n")
    cfg = load_config(f)
    assert cfg.hooks == "cgroup" and load_config(None).hooks == "auto"
    assert cfg.rules_paths == ["/etc/netvigil/rules"] and cfg.enforce_mode == "enforce"
    assert cfg.record_dir is None and cfg.alerts == {"sinks": {}}


@pytest.mark.parametrize("value, seconds", [("1s", 1.0), ("250ms", 0.25), (0, 0.0), ("0s", 0.0), (60, 60.0)])
def test_fold_repeats_is_a_period_or_off(tmp_path, value, seconds: float) -> None:
    f = tmp_path / "nv.yaml"
    f.write_text(f"sensor:\n  fold_repeats: {value}\n")
    assert load_config(f).fold_repeats_s == seconds
    assert load_config(None).fold_repeats_s == 1.0   # on by default


@pytest.mark.parametrize("text, message", [
    ("rules: [\n", ":2:1: invalid YAML"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("rulez: {}\n", "unknown section(s) rulez"),
    ("rules:\n  enforce_mode: block\n", "enforce_mode must be 'audit' or 'enforce'"),
    ("record: 3\n", "section 'record' must be a mapping"),
    ("sensor:\n  hooks: kprobes\n", ":2:3: sensor.hooks: expected one of auto, cgroup, syscalls, got 'kprobes'"),
    ("sensor:\n  fold_repeats: often\n", ":2:3: sensor.fold_repeats: expected a duration like"),
    ("sensor:\n  fold_repeats: 10ms\n", ":2:3: sensor.fold_repeats: expected 0 (off) or a period from 0.1s to 60s, got '10ms'"),
    ("sensor:\n  fold_repeats: 2m\n", "sensor.fold_repeats: expected 0 (off) or a period from 0.1s to 60s"),
])
def test_broken_config_names_file_and_problem(tmp_path, text: str, message: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert str(f) in str(err.value) and message in str(err.value)


def test_cli_prints_config_errors_without_traceback(tmp_path, capsys) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("rulez: {}\n")
    assert main(["run", "--config", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("netvigil: error: ") and "Traceback" not in err and str(f) in err


def test_missing_config_file(capsys) -> None:
    assert main(["run", "--config", "/nonexistent/nv.yaml"]) == 2
    assert "/nonexistent/nv.yaml: cannot read" in capsys.readouterr().err
