"""Parsing of the `alerts:` config section: defaults, validation, overrides."""
from __future__ import annotations

import pytest

from alerts.config import apply_overrides, parse_alerts_config
from alerts.errors import AlertsConfigError
from alerts.routing import RouteFilter
from test_alerts_support import make_alert

SRC = "/etc/netvigil/netvigil.yaml"


def test_full_example_parses_with_inheritance_of_delivery_defaults(tmp_path) -> None:
    cfg = parse_alerts_config({
        "hostname": "node-7",
        "delivery": {"timeout": "2s", "queue_size": 500, "spool_max_bytes": "64MiB"},
        "noise": {"aggregate": {"window": "2m", "key_fields": ["proc.exepath"]},
                  "rate_limit": {"rate": 5, "burst": 10, "report_interval": "30s"}},
        "sinks": {
            "console": {"type": "stdout", "format": "json"},
            "archive": {"type": "file", "path": str(tmp_path / "a.jsonl"), "max_bytes": "10MB"},
            "soc": {"type": "webhook", "url": "https://soc.example/hook", "batch": 20,
                    "delivery": {"timeout": "500ms", "fsync": "always"},
                    "min_priority": "warning", "rules": {"exclude": ["Noisy*"]}},
        },
    }, SRC, env={})
    assert [s.name for s in cfg.sinks] == ["console", "archive", "soc"]
    soc = cfg.sink("soc")
    assert soc.delivery.timeout_s == 0.5 and soc.delivery.queue_size == 500
    assert soc.delivery.fsync == "always" and soc.delivery.spool_max_bytes == 64 << 20
    assert cfg.sink("console").delivery.timeout_s == 2.0
    assert soc.route.min_priority == "Warning" and soc.settings.batch == 20
    assert cfg.sink("archive").settings.max_bytes == 10_000_000
    assert cfg.noise.aggregate.window_s == 120 and cfg.noise.rate_limit.rate_per_s == 5
    assert cfg.hostname == "node-7"


def test_missing_section_means_no_sinks() -> None:
    assert parse_alerts_config(None, SRC).sinks == ()


@pytest.mark.parametrize("sinks, expected", [
    ({"s": {"type": "pager"}}, "alerts.sinks.s: 'type' must be one of"),
    ({"s": {"type": "stdout", "colour": True}}, "alerts.sinks.s: unknown key(s) colour"),
    ({"s": {"type": "stdout", "min_priority": "loud"}}, "alerts.sinks.s: min_priority: unknown priority"),
    ({"s": {"type": "webhook", "url": "http://x/", "delivery": {"timeout": "soon"}}},
     "alerts.sinks.s: delivery: timeout: expected a duration"),
    ({"s": {"type": "file"}}, "alerts.sinks.s: 'path' (the JSON-lines file) is required"),
    ({"bad name!": {"type": "stdout"}}, "sink name 'bad name!'"),
    ({"s": {"type": "webhook", "url": "http://x/", "tls": {"ca_file": "/nonexistent/ca.pem"}}},
     "alerts.sinks.s: tls: ca_file '/nonexistent/ca.pem' is not a readable file"),
    ({"s": {"type": "slack"}}, "alerts.sinks.s: missing 'url_env' or 'url_file'"),
])
def test_errors_name_file_and_sink(sinks: dict, expected: str) -> None:
    with pytest.raises(AlertsConfigError) as info:
        parse_alerts_config({"sinks": sinks}, SRC, env={})
    assert str(info.value).startswith(SRC + ": alerts")
    assert expected in str(info.value)


def test_list_form_and_duplicate_names() -> None:
    cfg = parse_alerts_config({"sinks": [{"name": "a", "type": "stdout"}]}, SRC)
    assert cfg.sinks[0].name == "a"
    with pytest.raises(AlertsConfigError, match="duplicate sink name"):
        parse_alerts_config({"sinks": [{"name": "a", "type": "stdout"}] * 2}, SRC)


def test_per_run_overrides() -> None:
    raw = {"sinks": {"soc": {"type": "webhook", "url": "http://x/", "min_priority": "Debug"}}}
    new = apply_overrides(raw, ["soc.min_priority=Error", "soc.delivery.timeout=2s",
                                "console.type=stdout", "noise.rate_limit.enabled=false"])
    cfg = parse_alerts_config(new, SRC)
    assert cfg.sink("soc").route.min_priority == "Error"
    assert cfg.sink("soc").delivery.timeout_s == 2.0
    assert cfg.sink("console").type == "stdout"
    assert cfg.noise.rate_limit.enabled is False
    assert raw["sinks"]["soc"]["min_priority"] == "Debug"  # the input is not modified
    with pytest.raises(AlertsConfigError, match="SINK.KEY=VALUE"):
        apply_overrides(raw, ["nonsense"])


def test_route_filter_rules_tags_and_priority() -> None:
    cfg = parse_alerts_config({"sinks": {"s": {
        "type": "stdout", "min_priority": "Notice", "rules": {"include": ["Outbound*", "Shell"]},
        "tags": {"exclude": ["noisy"]}}}}, SRC)
    f = RouteFilter(cfg.sink("s").route)
    assert f.accepts(make_alert(0))  # rule "Outbound connection to C2", Warning
    assert not f.accepts(make_alert(0, priority="Informational"))
    assert not f.accepts(make_alert(0, rule="Other"))
    assert f.accepts(make_alert(0, rule="Shell"))
    assert not f.accepts(make_alert(0, tags=("network", "noisy")))


def test_documented_example_config_parses(tmp_path) -> None:
    import re
    from pathlib import Path

    import yaml

    text = (Path(__file__).resolve().parent.parent / "docs" / "alerts.md").read_text()
    example = re.search(r"A complete example:\n\n```yaml\n(.*?)```", text, re.S).group(1)
    key = tmp_path / "hmac"
    key.write_text("k" * 32)
    example = example.replace("/run/secrets/netvigil-hmac", str(key)).replace(
        "/etc/ssl/soc-ca.pem", "/etc/ssl/certs/ca-certificates.crt")
    cfg = parse_alerts_config(yaml.safe_load(example)["alerts"], "docs/alerts.md",
                              env={"SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/X",
                                   "SOC_TOKEN": "Bearer t"})
    assert [s.name for s in cfg.sinks] == ["console", "archive", "oncall", "soc", "sidekick"]
    assert cfg.spool_dir == "/var/lib/netvigil/spool"
