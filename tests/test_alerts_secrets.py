"""Secrets (webhook URLs, HMAC keys, header tokens) never appear in logs, errors or reprs."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_alerts_support import HangingReceiver, Receiver, config_for, make_alert, wait_until

from alerts.config import parse_alerts_config
from alerts.errors import AlertsConfigError
from alerts.report import format_stats, format_status
from alerts.router import AlertRouter

SLACK_TOKEN = "T0AAAA/B0BBBB/SLACKSECRETxyz123"
QUERY_TOKEN = "QUERYSECRET987"
HMAC_KEY = "HMACSECRETkey-0042"
BEARER = "BEARERSECRET-abc"
SECRETS = (SLACK_TOKEN, QUERY_TOKEN, HMAC_KEY, BEARER)


def _assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"secret leaked: ...{text[max(0, text.find(secret) - 80):][:200]}"


def test_no_secret_in_logs_errors_stats_or_dead_letters(tmp_path: Path, caplog, capfd) -> None:
    caplog.set_level(logging.DEBUG)
    echo = Receiver()  # an unhelpful receiver that echoes the request path and headers back
    echo.respond = lambda req: (500 if len(echo.requests) < 2 else 400, {},
                                f"bad request to {req.path} auth={req.headers.get('authorization')}"
                                .encode())
    down = Receiver()
    down.stop()
    hang = HangingReceiver()
    secret_file = tmp_path / "slack-url"
    secret_file.write_text(f"{echo.url}services/{SLACK_TOKEN}\n")
    env = {"HOOK_URL": f"{down.url}in?token={QUERY_TOKEN}", "HOOK_KEY": HMAC_KEY,
           "HOOK_AUTH": BEARER, "HANG_URL": f"{hang.url}x?token={QUERY_TOKEN}"}
    cfg = config_for({
        "slack": {"type": "slack", "url_file": str(secret_file)},
        "hook": {"type": "webhook", "url_env": "HOOK_URL", "secret_env": "HOOK_KEY",
                 "headers_env": {"Authorization": "HOOK_AUTH"}},
        "stuck": {"type": "webhook", "url_env": "HANG_URL", "secret_env": "HOOK_KEY",
                  "delivery": {"timeout": "0.3s"}},
        "echo-hook": {"type": "webhook", "url": f"{echo.url}e?token={QUERY_TOKEN}",
                      "headers_env": {"Authorization": "HOOK_AUTH"}},
    }, env=env)
    router = AlertRouter(cfg, tmp_path / "spool")
    router.start()
    try:
        for i in range(3):
            router.submit(make_alert(i))
        wait_until(lambda: router.stats()["slack"]["dead_lettered"] >= 1, what="slack dead letter")
        wait_until(lambda: router.stats()["hook"]["failed"] >= 2, what="hook failures")
        wait_until(lambda: router.stats()["stuck"]["failed"] >= 1, what="stuck timeout")
    finally:
        router.stop(0.3)
        hang.stop()
        echo.stop()
    texts = [caplog.text, *capfd.readouterr(), repr(cfg), str(cfg), str(router.stats()),
             format_stats(router.stats(), router.noise_stats()), format_status(router.stats())]
    for dead in (tmp_path / "spool").glob("*/dead-letter.jsonl"):
        texts.append(dead.read_text())
    assert any("HTTP 400" in t for t in texts)  # failures were reported...
    assert "timed out" in caplog.text
    for text in texts:
        _assert_clean(text)  # ...without their secrets


@pytest.mark.parametrize("sink", [
    {"type": "slack", "url": f"https://hooks.slack.com/services/{SLACK_TOKEN}"},
    {"type": "webhook", "url": "http://127.0.0.1:9/", "secret": HMAC_KEY},
    {"type": "webhook", "url": "http://127.0.0.1:9/", "secret_env": "EMPTY"},
    {"type": "webhook", "url": f"ftp://x/{QUERY_TOKEN}"},
    {"type": "webhook", "url": f"http://h:99999999/{QUERY_TOKEN}"},
])
def test_config_errors_never_echo_secret_values(sink: dict) -> None:
    with pytest.raises(AlertsConfigError) as info:
        parse_alerts_config({"sinks": {"s1": sink}}, "/etc/netvigil/netvigil.yaml", env={"EMPTY": ""})
    message = str(info.value)
    assert message.startswith("/etc/netvigil/netvigil.yaml: alerts.sinks.s1")
    _assert_clean(message)


def test_secret_file_errors_name_the_file_not_the_content(tmp_path: Path) -> None:
    with pytest.raises(AlertsConfigError, match="cannot read secret file .*/nope"):
        parse_alerts_config({"sinks": {"s": {"type": "slack", "url_file": str(tmp_path / "nope")}}},
                            "c.yaml")
