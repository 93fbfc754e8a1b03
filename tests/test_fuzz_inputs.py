"""Fuzz: every generated bad input through every command that reads it.

For each input of tests/fuzz_corpus.py: the command exits non-zero with a message naming
the file, never a traceback, within a generous time bound (an alarm, not a timed
assertion). `run --config` must fail at config validation: the BPF load is replaced by a
marker that fails the test if reached. Commands run in-process through sensor.cli.main;
the cases that need another user (permissions), and a sample of the rest, run in a
subprocess under an address-space limit. bench/fuzz_inputs.py prints the figures.
"""
from __future__ import annotations

import os
import random
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz_corpus
from fuzz_corpus import Case, all_cases, ok_rules
from sensor.cli import main

TIME_LIMIT_S = 30  # generous: the slowest case takes about a second
CASES = all_cases()
IN_PROCESS = [(c, cmd) for c in CASES if not c.as_nobody for cmd in c.commands]
SUBPROCESS = [(c, cmd) for c in CASES if c.as_nobody for cmd in c.commands] + \
    random.Random(3).sample(IN_PROCESS, 6)
BENCH = Path(__file__).resolve().parent.parent / "bench"


class _ReachedBPF(BaseException):
    """The command got past config validation to the BPF load."""


class _TimeLimit(BaseException):
    """The command ran longer than TIME_LIMIT_S."""


@pytest.fixture
def no_bpf(monkeypatch):
    import sensor.enforcement.agent as agent  # noqa: PLC0415
    import sensor.run_command as run_command  # noqa: PLC0415

    def reached(*_a, **_k):
        raise _ReachedBPF()
    monkeypatch.setattr(run_command, "Sensor", reached)
    monkeypatch.setattr(agent.Enforcement, "start", reached)
    monkeypatch.delenv("NETVIGIL_CONFIG", raising=False)


def _alarm(_signum, _frame):
    raise _TimeLimit()


@pytest.mark.parametrize("case, command", IN_PROCESS,
                         ids=[f"{c.kind}-{cmd}-{c.name}" for c, cmd in IN_PROCESS])
def test_bad_input_fails_cleanly_in_process(case: Case, command: str, tmp_path: Path,
                                            capsys, no_bpf) -> None:
    ok_rules(tmp_path)
    path = case.build(tmp_path)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_LIMIT_S)
    try:
        code = main(case.argv(command, path, tmp_path))
    except _ReachedBPF:
        pytest.fail(f"{case.name}: `{command}` accepted the input and reached the BPF load")
    except _TimeLimit:
        pytest.fail(f"{case.name}: `{command}` still running after {TIME_LIMIT_S} s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    out, err = capsys.readouterr()
    assert code != 0, f"{case.name}: `{command}` exited 0:\n{out[-500:]}{err[-500:]}"
    assert "Traceback" not in out + err
    assert str(path) in out + err or path.name in out + err, err[-500:]


def _as_nobody_or_limited(as_nobody: bool):
    def pre() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        if as_nobody:
            os.setgid(65534)
            os.setuid(65534)
    return pre


@pytest.mark.skipif(os.geteuid() != 0, reason="permission cases switch to an unprivileged user")
@pytest.mark.parametrize("case, command", SUBPROCESS,
                         ids=[f"{c.kind}-{cmd}-{c.name}" for c, cmd in SUBPROCESS])
def test_bad_input_fails_cleanly_in_a_subprocess(case: Case, command: str,
                                                 tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        from fuzz_inputs import ENTRY, classify  # noqa: PLC0415
    finally:
        sys.path.remove(str(BENCH))
    tmp_path.chmod(0o755)
    for parent in tmp_path.parents:  # the unprivileged user must reach the scratch dir
        if parent == Path("/tmp") or parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o055)
    ok_rules(tmp_path)
    path = case.build(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "NETVIGIL_CONFIG"}
    proc = subprocess.run([sys.executable, "-c", ENTRY, *case.argv(command, path, tmp_path)],
                          capture_output=True, text=True, timeout=TIME_LIMIT_S * 2, env=env,
                          cwd=tmp_path, preexec_fn=_as_nobody_or_limited(case.as_nobody))
    outcome = classify(proc.returncode, proc.stdout, proc.stderr, path)
    for p in tmp_path.rglob("*"):
        p.chmod(0o755)
    assert outcome == "ok", f"{case.name}: {outcome}: {proc.stderr[-800:]}"


def test_memory_stays_bounded_over_the_corpus() -> None:
    """The in-process runs above (same process) never grew the process past 1 GiB."""
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < (1 << 30) // 1024


_yamlish = st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#\n\t =,.0123\x00\x1b")),
                   max_size=200)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_yamlish)
def test_any_rules_text_loads_or_gives_a_typed_error(text: str) -> None:
    from rules.errors import RulesError  # noqa: PLC0415
    from rules.loader import load_rules_text  # noqa: PLC0415

    try:
        load_rules_text(fuzz_corpus.VALID_RULES + text, "h.yaml")
    except RulesError as exc:
        assert "h.yaml" in str(exc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(text=_yamlish)
def test_any_config_text_loads_or_gives_a_typed_error(text: str, tmp_path: Path) -> None:
    from alerts.errors import AlertsError  # noqa: PLC0415
    from rules.errors import RulesError  # noqa: PLC0415
    from sensor.config import load_config  # noqa: PLC0415
    from sensor.errors import SensorError  # noqa: PLC0415

    f = tmp_path / "h.yaml"
    f.write_text("alerts:\n  sinks:\n    s: {type: stdout}\n" + text)
    try:
        load_config(f)
    except (SensorError, AlertsError, RulesError) as exc:
        assert str(f) in str(exc)
