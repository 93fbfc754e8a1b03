"""The HTTP sinks' transport against real parts on loopback: a forward proxy (from the
environment, bypassed by NO_PROXY, or the sink's own), a private CA, a client certificate
the receiver requires (mTLS), keep-alive and abort; errors name the sink, never a URL
path or a proxy password."""
from __future__ import annotations

import base64
import re
import ssl
import threading
import time
from pathlib import Path

import pytest
from test_alerts_support import (ForwardProxy, HangingReceiver, Receiver, config_for, make_alert,
                                 make_pki, server_tls_context, wait_until)

from alerts.errors import AlertsConfigError, RetryableDeliveryError
from alerts.secrets import Redactor
from alerts.signing import verify
from alerts.sinks import webhook
from alerts.sinktest import run_sink_tests

HMAC_KEY = "k3y-for-transport-tests-42"
TOKEN = "PATHTOKEN4242"
PROXY_PASSWORD = "pr0xy-pa55word"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The process environment without any proxy variable (tests set what they need)."""
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.lower(), raising=False)
    return monkeypatch


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def proxy():
    p = ForwardProxy()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _hook(url: str, secrets: dict[str, str] | None = None, timeout_s: float = 2,
          **extra: object) -> webhook.WebhookSink:
    raw = {"url": url, "secret_env": "K", **extra}
    settings = webhook.parse_settings(raw, "t", {"K": HMAC_KEY, **(secrets or {})})
    return webhook.WebhookSink("hook", settings, timeout_s=timeout_s, redactor=Redactor())


def _failure(sink: webhook.WebhookSink) -> str:
    with pytest.raises(RetryableDeliveryError) as info:
        sink.deliver([make_alert(0)])
    return str(info.value)


# -- forward proxy -----------------------------------------------------------------------
def test_http_sink_posts_absolute_uris_through_the_environment_proxy(
        env: pytest.MonkeyPatch, receiver: Receiver) -> None:
    proxy = ForwardProxy(auth=f"alice:{PROXY_PASSWORD}")
    env.setenv("HTTP_PROXY", proxy.url(f"alice:{PROXY_PASSWORD}"))
    url = f"{receiver.url}in?token={TOKEN}"
    try:
        sink = _hook(url)
        alerts = [make_alert(i) for i in range(3)]
        for alert in alerts:
            sink.deliver([alert])
    finally:
        proxy.stop()
    assert [(p.method, p.target) for p in proxy.requests] == [("POST", url)] * 3
    expected = "Basic " + base64.b64encode(f"alice:{PROXY_PASSWORD}".encode()).decode()
    assert {p.headers["proxy-authorization"] for p in proxy.requests} == {expected}
    got = receiver.wait_for(3)
    assert [r.headers["x-netvigil-alert-id"] for r in got] == [a.uuid for a in alerts]
    for req in got:  # body and signature arrive intact through the proxy
        assert verify(HMAC_KEY.encode(), req.headers["x-netvigil-timestamp"], req.body,
                      req.headers["x-netvigil-signature"], now=time.time())
    assert sink.describe() == (f"webhook http://127.0.0.1:{receiver.port} via proxy "
                               f"http://127.0.0.1:{proxy.port}, HMAC-signed")


def test_https_sink_tunnels_with_connect_and_proxy_credentials(
        env: pytest.MonkeyPatch, pki: Path) -> None:
    proxy = ForwardProxy(auth=f"alice:{PROXY_PASSWORD}")
    r = Receiver(tls=server_tls_context(pki, require_client=False))
    try:
        env.setenv("HTTPS_PROXY", proxy.url(f"alice:{PROXY_PASSWORD}"))
        sink = _hook(f"{r.url}x?token={TOKEN}", tls={"ca_file": str(pki / "ca.crt")})
        sink.deliver([make_alert(0)])
        sink.deliver([make_alert(1)])
        connects = [(p.method, p.target) for p in proxy.requests]
        assert connects == [("CONNECT", f"127.0.0.1:{r.port}")]
        expected = "Basic " + base64.b64encode(f"alice:{PROXY_PASSWORD}".encode()).decode()
        assert proxy.requests[0].headers["proxy-authorization"] == expected
        got = r.wait_for(2)
        assert [g.path for g in got] == [f"/x?token={TOKEN}"] * 2  # one tunnel, kept alive
        assert all("proxy-authorization" not in g.headers for g in got)  # for the proxy only
        assert PROXY_PASSWORD not in sink.describe()
    finally:
        r.stop()
        proxy.stop()


@pytest.mark.parametrize("bypass", ["NO_PROXY", "proxy: false"])
def test_no_proxy_and_proxy_false_connect_directly(env: pytest.MonkeyPatch, proxy: ForwardProxy,
                                                   receiver: Receiver, bypass: str) -> None:
    env.setenv("HTTP_PROXY", proxy.url())
    if bypass == "NO_PROXY":
        env.setenv("NO_PROXY", "localhost,127.0.0.1")
        sink = _hook(receiver.url)
    else:
        sink = _hook(receiver.url, proxy=False)
    sink.deliver([make_alert(0)])
    assert len(receiver.wait_for(1)) == 1
    assert proxy.requests == []
    assert "via proxy" not in sink.describe()


def test_the_sinks_own_proxy_wins_over_the_environment(env: pytest.MonkeyPatch, proxy: ForwardProxy,
                                                       receiver: Receiver) -> None:
    env.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there: must not be used
    sink = _hook(receiver.url, {"SINK_PROXY": proxy.url()}, proxy_env="SINK_PROXY")
    sink.deliver([make_alert(0)])
    assert [p.method for p in proxy.requests] == ["POST"]
    assert len(receiver.wait_for(1)) == 1


def test_proxy_failures_name_the_sink_and_never_the_password_or_path(
        env: pytest.MonkeyPatch, receiver: Receiver, pki: Path) -> None:
    proxy = ForwardProxy(auth=f"alice:{PROXY_PASSWORD}")
    tls_receiver = Receiver(tls=server_tls_context(pki, require_client=False))
    try:
        wrong = proxy.url("alice:wrong-pa55word")
        # http target: the proxy answers 407 itself; a proxy problem is retried, never dead-lettered
        http_msg = _failure(_hook(f"{receiver.url}in?token={TOKEN}", {"P": wrong}, proxy_env="P"))
        assert http_msg.startswith(f"sink 'hook': the proxy http://127.0.0.1:{proxy.port} "
                                   "answered HTTP 407")
        # https target: the CONNECT is refused
        env.setenv("HTTPS_PROXY", wrong)
        https_msg = _failure(_hook(f"{tls_receiver.url}in?token={TOKEN}",
                                   tls={"ca_file": str(pki / "ca.crt")}))
        assert https_msg.startswith(f"sink 'hook': POST to https://127.0.0.1:{tls_receiver.port} "
                                    f"via proxy http://127.0.0.1:{proxy.port} failed:")
        assert "407" in https_msg
        # a proxy that is down
        env.setenv("HTTPS_PROXY", f"http://alice:{PROXY_PASSWORD}@127.0.0.1:9")
        down_msg = _failure(_hook(f"{tls_receiver.url}in?token={TOKEN}",
                                  tls={"ca_file": str(pki / "ca.crt")}))
        assert "via proxy http://127.0.0.1:9 failed: ConnectionRefusedError" in down_msg
        assert receiver.requests == [] and tls_receiver.requests == []
        for msg in (http_msg, https_msg, down_msg):
            assert PROXY_PASSWORD not in msg and "wrong-pa55word" not in msg and TOKEN not in msg
    finally:
        tls_receiver.stop()
        proxy.stop()


def test_proxy_settings_errors_and_secrecy(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(AlertsConfigError, match=r"^test.yaml: alerts.sinks.s: proxy: the URL must be "
                                                r"an absolute http:// or https:// URL$"):
        config_for({"s": {"type": "webhook", "url": "http://x/", "proxy": "socks5://h:1080"}})
    with pytest.raises(AlertsConfigError, match="give only one of proxy, proxy_env, proxy_file"):
        config_for({"s": {"type": "webhook", "url": "http://x/", "proxy": False, "proxy_env": "P"}})
    cfg = config_for({"s": {"type": "webhook", "url": "http://x/",
                            "proxy": f"http://alice:{PROXY_PASSWORD}@proxy:3128"}})
    assert PROXY_PASSWORD not in repr(cfg) and PROXY_PASSWORD not in str(cfg)
    env.setenv("HTTPS_PROXY", "socks5://h:1080")
    with pytest.raises(AlertsConfigError, match=r"sink 'hook': the proxy in the environment "
                                                r"\(HTTPS_PROXY or ALL_PROXY\): the URL must be"):
        _hook("https://127.0.0.1:1/")


# -- TLS: private CA and client certificates, as `netvigil sinks test` reports them -----------
def _sinks_test(tls: ssl.SSLContext, sinks: dict) -> tuple[dict, list]:
    """`netvigil sinks test` of `sinks` against a TLS receiver: results by sink name, and
    the requests that arrived. Sink URLs name the receiver as RECEIVER/."""
    r = Receiver(tls=tls)
    try:
        for settings in sinks.values():
            settings["url"] = settings["url"].replace("RECEIVER/", r.url)
        results = {res.name: res for res in run_sink_tests(config_for(sinks))}
    finally:
        r.stop()
    return results, r.requests


def test_private_ca_verified_with_ca_file_and_refused_without(pki: Path) -> None:
    results, arrived = _sinks_test(server_tls_context(pki, require_client=False), {
        "trusted": {"type": "webhook", "url": "RECEIVER/", "tls": {"ca_file": str(pki / "ca.crt")}},
        "untrusted": {"type": "webhook", "url": f"RECEIVER/in?token={TOKEN}"}})
    assert results["trusted"].ok, results["trusted"].detail
    bad = results["untrusted"]
    assert not bad.ok
    assert re.match(r"sink 'untrusted': POST to https://127\.0\.0\.1:\d+ failed: "
                    r"SSLCertVerificationError", bad.detail)
    assert "certificate verify failed" in bad.detail and "set tls.ca_file" in bad.detail
    assert TOKEN not in bad.detail
    assert len(arrived) == 1  # only the trusted sink's test alert arrived


def test_client_certificate_required_by_the_receiver(pki: Path) -> None:
    ca = str(pki / "ca.crt")
    results, arrived = _sinks_test(server_tls_context(pki, require_client=True), {
        "mtls": {"type": "webhook", "url": "RECEIVER/",
                 "tls": {"ca_file": ca, "cert_file": str(pki / "client.crt"),
                         "key_file": str(pki / "client.key")}},
        "nocert": {"type": "webhook", "url": "RECEIVER/", "tls": {"ca_file": ca}}})
    assert results["mtls"].ok, results["mtls"].detail
    bad = results["nocert"]
    assert not bad.ok
    assert re.match(r"sink 'nocert': POST to https://127\.0\.0\.1:\d+ failed:", bad.detail)
    assert "client certificate" in bad.detail and "tls.cert_file" in bad.detail
    assert len(arrived) == 1


# -- connection handling -------------------------------------------------------------------
def test_posts_share_one_kept_alive_connection(receiver: Receiver) -> None:
    sink = _hook(receiver.url)
    for i in range(20):
        sink.deliver([make_alert(i)])
    assert len(receiver.wait_for(20)) == 20
    assert len(receiver.connections) == 1


def test_abort_unblocks_a_post_to_a_hanging_receiver() -> None:
    hang = HangingReceiver()
    sink = _hook(f"{hang.url}in?token={TOKEN}", timeout_s=30)
    errors: list[str] = []

    def post() -> None:
        try:
            sink.deliver([make_alert(0)])
        except RetryableDeliveryError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    try:
        wait_until(lambda: bool(hang.conns), what="the POST's connection")
        time.sleep(0.2)  # the request is sent; the sink waits for an answer that never comes
        started = time.monotonic()
        sink.abort()
        thread.join(5)
        assert not thread.is_alive() and time.monotonic() - started < 2
    finally:
        hang.stop()
    assert len(errors) == 1
    assert errors[0].startswith(f"sink 'hook': POST to http://127.0.0.1:{hang.port} failed:")
    assert TOKEN not in errors[0]
