"""Sinks against real HTTP servers on loopback: exact payloads, signatures, TLS, files."""
from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import pytest
from test_alerts_support import FakeMatch, Receiver, make_alert, make_pki, server_tls_context

from alerts.errors import PermanentDeliveryError, RetryableDeliveryError
from alerts.model import Alert
from alerts.secrets import Redactor
from alerts.sinks import falcosidekick, jsonfile, slack, stdout, webhook
from alerts.sinks.slack_format import (CONTEXT_TEXT_LIMIT, FIELD_TEXT_LIMIT, MAX_FIELDS,
                                       SECTION_TEXT_LIMIT)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "alerts.md"
HMAC_KEY = "k3y-for-tests-0123456789"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def _slack(url: str, **extra) -> slack.SlackSink:
    settings = slack.parse_settings({"url_env": "SLACK_URL", **extra}, "t", {"SLACK_URL": url})
    return slack.SlackSink("oncall", settings, timeout_s=2, redactor=Redactor())


# -- Slack -----------------------------------------------------------------------------------
def test_slack_message_structure_is_exact(receiver: Receiver) -> None:
    alert = Alert.from_match(FakeMatch(), "node-1")
    _slack(receiver.url + "services/T0/B0/XyZ", channel="#sec").deliver([alert])
    req = receiver.wait_for(1)[0]
    assert req.path == "/services/T0/B0/XyZ"
    assert req.headers["content-type"] == "application/json"
    assert req.json() == {
        "text": "[Warning] Outbound connection to C2 on node-1",
        "channel": "#sec",
        "attachments": [{
            "color": "#ffff00",
            "fallback": "[Warning] Outbound connection to C2 on node-1",
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text":
                    "*Outbound connection to C2*\nOutbound connection (proc=curl dest=203.0.113.7:4444)"}},
                {"type": "section", "fields": [
                    {"type": "mrkdwn", "text": "*Priority*\nWarning"},
                    {"type": "mrkdwn", "text": "*Host*\nnode-1"},
                    {"type": "mrkdwn", "text": "*Process*\n`/usr/bin/curl` (pid 4242)\n"
                                               "`curl http://203.0.113.7:4444/x`\nuser root"},
                    {"type": "mrkdwn", "text": "*Connection*\ntcp 10.0.0.5:51514 → 203.0.113.7:4444"},
                    {"type": "mrkdwn", "text": "*Container*\nweb (3ad7b26ded6d)\nnginx:1.27"},
                    {"type": "mrkdwn", "text": "*Pod*\nshop/web-7f9c"},
                ]},
                {"type": "context", "elements": [{"type": "mrkdwn", "text":
                    f"2025-11-21T04:40:00.123456789Z · source syscall · tags network, "
                    f"mitre_command_and_control · uuid {alert.uuid}"}]},
            ],
        }],
    }


def test_slack_long_values_are_truncated_visibly_within_limits(receiver: Receiver) -> None:
    alert = make_alert(0).with_changes(
        output="x" * 10_000 + "<&>",
        output_fields={"proc.exepath": "/bin/" + "a" * 5000, "proc.cmdline": "sh -c " + "b" * 9000,
                       "fd.name": "c" * 3000, "container.id": "abc", "container.name": "n" * 3000,
                       "k8s.pod.name": "p" * 3000, "k8s.ns.name": "ns"},
        rule="R" * 400)
    _slack(receiver.url).deliver([alert])
    msg = receiver.wait_for(1)[0].json()
    blocks = msg["attachments"][0]["blocks"]
    head = blocks[0]["text"]["text"]
    assert len(head) <= SECTION_TEXT_LIMIT
    assert re.search(r"… \[truncated \d+ chars\]$", head)
    fields = blocks[1]["fields"]
    assert len(fields) <= MAX_FIELDS
    for field in fields:
        assert len(field["text"]) <= FIELD_TEXT_LIMIT
    process = next(f["text"] for f in fields if f["text"].startswith("*Process*"))
    assert "[truncated" in process
    assert len(blocks[2]["elements"][0]["text"]) <= CONTEXT_TEXT_LIMIT
    assert len(msg["text"]) <= 300 and "[truncated" in msg["text"]


def test_slack_escapes_mrkdwn_control_characters(receiver: Receiver) -> None:
    _slack(receiver.url).deliver([make_alert(0).with_changes(output="a <b> & c")])
    text = receiver.wait_for(1)[0].json()["attachments"][0]["blocks"][0]["text"]["text"]
    assert text.endswith("a &lt;b&gt; &amp; c")


def test_slack_priority_colours() -> None:
    from alerts.sinks.slack_format import build_message
    colours = {p: build_message(make_alert(0, priority=p))["attachments"][0]["color"]
               for p in ("Critical", "Warning", "Informational")}
    assert colours == {"Critical": "#ff9000", "Warning": "#ffff00", "Informational": "#68c2ff"}


# -- falcosidekick ---------------------------------------------------------------------------
def test_falcosidekick_gets_exactly_falcos_payload(receiver: Receiver) -> None:
    alert = Alert.from_match(FakeMatch(), "node-1")
    url = receiver.url.rstrip("/")  # falcosidekick's address without a path: POST /
    settings = falcosidekick.parse_settings({"url": url}, "t", {})
    falcosidekick.FalcosidekickSink("fsk", settings, timeout_s=2, redactor=Redactor()).deliver([alert])
    req = receiver.wait_for(1)[0]
    assert (req.method, req.path) == ("POST", "/")
    assert req.headers["content-type"] == "application/json"
    body = req.json()
    assert body == {
        "hostname": "node-1",
        "output": "04:40:00.123456789: Warning Outbound connection (proc=curl dest=203.0.113.7:4444)",
        "priority": "Warning",
        "rule": "Outbound connection to C2",
        "source": "syscall",
        "tags": ["network", "mitre_command_and_control"],
        "time": "2025-11-21T04:40:00.123456789Z",
        "output_fields": {**FakeMatch().output_fields, "proc.exec_id": "b1d3-4242-99",
                          "container.id": "3ad7b26ded6d", "container.name": "web",
                          "container.image": "nginx:1.27", "k8s.ns.name": "shop",
                          "k8s.pod.name": "web-7f9c", "netvigil.alert_id": alert.uuid},
        "uuid": alert.uuid,
    }
    assert body["output"]  # falcosidekick rejects an empty output with 400


def test_falcosidekick_400_is_permanent_and_500_retryable(receiver: Receiver) -> None:
    settings = falcosidekick.parse_settings({"url": receiver.url}, "t", {})
    sink = falcosidekick.FalcosidekickSink("fsk", settings, timeout_s=2, redactor=Redactor())
    receiver.respond = lambda req: (400, {}, b"Please send a valid request body")
    with pytest.raises(PermanentDeliveryError, match="HTTP 400: Please send a valid request body"):
        sink.deliver([make_alert(0)])
    receiver.respond = lambda req: (503, {"Retry-After": "7"}, b"")
    with pytest.raises(RetryableDeliveryError) as info:
        sink.deliver([make_alert(1)])
    assert info.value.retry_after == 7.0


# -- generic webhook -------------------------------------------------------------------------
def _documented_verifier():
    text = DOCS.read_text()
    block = re.search(r"<!-- verify-snippet:start -->\s*```python\n(.*?)```", text, re.S)
    assert block, "docs/alerts.md lost its verification snippet"
    namespace: dict = {}
    exec(block.group(1), namespace)  # noqa: S102 - the documented recipe, run as published
    return namespace["verify_netvigil"]


def _webhook(url: str, env: dict | None = None, **extra) -> webhook.WebhookSink:
    env = {"HOOK_KEY": HMAC_KEY, "HOOK_TOKEN": "Bearer s3cr3t-token", **(env or {})}
    raw = {"url": url, "secret_env": "HOOK_KEY", "headers": {"X-Team": "secops"},
           "headers_env": {"Authorization": "HOOK_TOKEN"}, **extra}
    return webhook.WebhookSink("hook", webhook.parse_settings(raw, "t", env), timeout_s=2,
                               redactor=Redactor())


def test_webhook_signature_verifies_with_the_documented_recipe(receiver: Receiver) -> None:
    verify = _documented_verifier()
    alert = make_alert(0)
    _webhook(receiver.url + "hooks/netvigil").deliver([alert])
    req = receiver.wait_for(1)[0]
    assert req.path == "/hooks/netvigil"
    assert req.body == alert.json_bytes
    assert req.headers["x-team"] == "secops"
    assert req.headers["authorization"] == "Bearer s3cr3t-token"
    assert req.headers["x-netvigil-alert-id"] == alert.uuid
    assert req.headers["x-netvigil-signature"].startswith("sha256=")
    assert verify(req.body, req.raw_headers, HMAC_KEY.encode()) is True
    # tampered body, wrong key: rejected
    assert verify(req.body.replace(b"Warning", b"Debug"), req.raw_headers, HMAC_KEY.encode()) is False
    assert verify(req.body, req.raw_headers, b"other-key") is False


def test_webhook_replayed_request_is_rejected_by_the_recipe(receiver: Receiver) -> None:
    verify = _documented_verifier()
    settings = webhook.parse_settings({"url": receiver.url, "secret_env": "K"}, "t", {"K": HMAC_KEY})
    old = webhook.WebhookSink("hook", settings, timeout_s=2, redactor=Redactor(),
                              clock=lambda: time.time() - 3600)
    old.deliver([make_alert(0)])
    req = receiver.wait_for(1)[0]
    assert verify(req.body, req.raw_headers, HMAC_KEY.encode()) is False


def test_webhook_batches_as_json_array(receiver: Receiver) -> None:
    sink = _webhook(receiver.url, batch=3)
    alerts = [make_alert(i) for i in range(3)]
    sink.deliver(alerts)
    req = receiver.wait_for(1)[0]
    assert [a["uuid"] for a in req.json()] == [a.uuid for a in alerts]
    assert _documented_verifier()(req.body, req.raw_headers, HMAC_KEY.encode())


# -- TLS -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


_server_ctx = server_tls_context


def _tls_hook(url: str, tls: dict) -> webhook.WebhookSink:
    settings = webhook.parse_settings({"url": url, "tls": tls}, "t", {})
    return webhook.WebhookSink("tls-hook", settings, timeout_s=2, redactor=Redactor())


def test_tls_with_ca_file_and_without(pki: Path) -> None:
    r = Receiver(tls=_server_ctx(pki, require_client=False))
    try:
        _tls_hook(r.url, {"ca_file": str(pki / "ca.crt")}).deliver([make_alert(0)])
        with pytest.raises(RetryableDeliveryError, match="CERTIFICATE_VERIFY_FAILED|certificate verify"):
            _tls_hook(r.url, {}).deliver([make_alert(1)])
        _tls_hook(r.url, {"insecure_skip_verify": True}).deliver([make_alert(2)])
        assert len(r.wait_for(2)) == 2
    finally:
        r.stop()


def test_tls_client_certificate(pki: Path) -> None:
    r = Receiver(tls=_server_ctx(pki, require_client=True))
    try:
        tls = {"ca_file": str(pki / "ca.crt"), "cert_file": str(pki / "client.crt"),
               "key_file": str(pki / "client.key")}
        _tls_hook(r.url, tls).deliver([make_alert(0)])
        assert len(r.wait_for(1)) == 1
        with pytest.raises(RetryableDeliveryError):
            _tls_hook(r.url, {"ca_file": str(pki / "ca.crt")}).deliver([make_alert(1)])
    finally:
        r.stop()


# -- stdout and file -------------------------------------------------------------------------
class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_stdout_json_lines_when_piped_and_text_on_a_terminal() -> None:
    alert = make_alert(0)
    piped = io.StringIO()
    stdout.StdoutSink("out", stdout.StdoutSettings(), stream=piped).deliver([alert])
    assert json.loads(piped.getvalue()) == alert.to_dict()
    tty = _Tty()
    stdout.StdoutSink("out", stdout.StdoutSettings(), stream=tty).deliver([alert])
    line = tty.getvalue()
    assert line.startswith("04:40:00.123456789: \033[33mWarning\033[0m Outbound connection (proc=curl")
    assert line.endswith("#0 [rule: Outbound connection to C2]\n")
    assert not line.lstrip().startswith("{")


def test_file_sink_rotates_by_size(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    settings = jsonfile.parse_settings({"path": str(path), "max_bytes": "4KiB", "backups": 2}, "t")
    sink = jsonfile.JsonFileSink("file", settings)
    alerts = [make_alert(i) for i in range(30)]
    for alert in alerts:
        sink.deliver([alert])
    sink.close()
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["alerts.jsonl", "alerts.jsonl.1", "alerts.jsonl.2"]
    assert all(f.stat().st_size <= 4096 for f in files)
    newest = [json.loads(x)["uuid"] for x in path.read_text().splitlines()]
    assert newest == [a.uuid for a in alerts[-len(newest):]]  # newest lines, in order
