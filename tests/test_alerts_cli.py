"""`netvigil sinks test` against real loopback receivers; errors and secrets in its output."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_alerts_support import Receiver

from sensor.cli import main

SLACK_PATH = "/services/T0SECRET/B0SECRET/abcdefSECRETtoken"
HMAC_KEY = "hmac-SECRET-key-material"


@pytest.fixture
def receivers():
    rs = {name: Receiver() for name in ("slack", "hook", "fsk", "bad")}
    rs["bad"].respond = lambda req: (400, {}, b"no such channel")
    yield rs
    for r in rs.values():
        r.stop()


def _write_config(tmp_path: Path, receivers, monkeypatch, *, include_bad: bool) -> Path:
    monkeypatch.setenv("SLACK_WEBHOOK_URL", receivers["slack"].url.rstrip("/") + SLACK_PATH)
    monkeypatch.setenv("HOOK_KEY", HMAC_KEY)
    sinks = {
        "oncall": {"type": "slack", "url_env": "SLACK_WEBHOOK_URL", "min_priority": "Critical"},
        "soc": {"type": "webhook", "url": receivers["hook"].url, "secret_env": "HOOK_KEY"},
        "sidekick": {"type": "falcosidekick", "url": receivers["fsk"].url},
    }
    if include_bad:
        sinks["broken"] = {"type": "webhook", "url": receivers["bad"].url}
    path = tmp_path / "netvigil.yaml"
    path.write_text(yaml.safe_dump({"rules": {"paths": ["/x"]}, "alerts": {"sinks": sinks}}))
    return path


def test_sinks_test_reports_every_sink_and_fails_if_one_fails(
        receivers, tmp_path: Path, monkeypatch, capsys) -> None:
    path = _write_config(tmp_path, receivers, monkeypatch, include_bad=True)
    code = main(["sinks", "test", "--config", str(path)])
    out, err = capsys.readouterr()
    assert code == 1
    lines = {line.split()[1]: line for line in out.splitlines() if line[:4] in ("ok  ", "FAIL")}
    assert lines["oncall"].startswith("ok") and "slack http://127.0.0.1:" in lines["oncall"]
    assert lines["soc"].startswith("ok") and "HMAC-signed" in lines["soc"]
    assert lines["sidekick"].startswith("ok")
    assert lines["broken"].startswith("FAIL") and "HTTP 400: no such channel" in lines["broken"]
    assert "3 of 4 sink(s) took the test alert" in out
    # every receiver really got the test alert (routing bypassed: Notice < Critical for slack)
    assert receivers["slack"].wait_for(1)[0].path == SLACK_PATH
    assert receivers["fsk"].wait_for(1)[0].json()["rule"] == "netvigil sinks test"
    assert receivers["hook"].wait_for(1)[0].headers["x-netvigil-signature"].startswith("sha256=")
    assert SLACK_PATH not in out + err and HMAC_KEY not in out + err


def test_sinks_test_all_ok_and_single_sink(receivers, tmp_path: Path, monkeypatch, capsys) -> None:
    path = _write_config(tmp_path, receivers, monkeypatch, include_bad=False)
    assert main(["sinks", "test", "--config", str(path)]) == 0
    capsys.readouterr()
    assert main(["sinks", "test", "--config", str(path), "--sink", "sidekick"]) == 0
    out = capsys.readouterr().out
    assert "1 of 1 sink(s)" in out and "soc" not in out


def test_config_errors_name_file_and_sink_without_traceback(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("MISSING_URL", raising=False)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"alerts": {"sinks": {"oncall": {"type": "slack",
                                                                    "url_env": "MISSING_URL"}}}}))
    assert main(["sinks", "test", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("netvigil: error: ")
    assert str(path) in err and "alerts.sinks.oncall" in err and "MISSING_URL" in err
    assert "Traceback" not in err
    path.write_text("alerts:\n  sinks: [\n")
    assert main(["sinks", "test", "--config", str(path)]) == 2
    assert f"{path}:" in capsys.readouterr().err


def test_help_shows_no_secret(monkeypatch, capsys) -> None:
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.com" + SLACK_PATH)
    monkeypatch.setenv("NETVIGIL_HMAC_KEY", HMAC_KEY)
    with pytest.raises(SystemExit):
        main(["sinks", "test", "--help"])
    out = capsys.readouterr().out
    assert "--config FILE" in out
    assert SLACK_PATH not in out and HMAC_KEY not in out
