"""Generic webhook sink: Falco JSON POSTed, custom headers, optional HMAC-SHA256 signature."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence

from alerts.errors import AlertsConfigError
from alerts.http import HttpPoster, ProxyOptions, TLSOptions
from alerts.model import Alert
from alerts.secrets import Redactor, Secret, read_secret
from alerts.signing import DEFAULT_SIGNATURE_HEADER, DEFAULT_TIMESTAMP_HEADER, signature
from alerts.sinks.base import Sink, check_keys
from alerts.sinks.http_settings import (PROXY_KEYS, URL_KEYS, parse_headers, parse_proxy, parse_tls,
                                        parse_url)
from alerts.units import parse_positive_int

KEYS = URL_KEYS | PROXY_KEYS | {"headers", "headers_env", "secret_env", "secret_file",
                                "signature_header", "timestamp_header", "tls", "batch"}
ID_HEADER = "X-Netvigil-Alert-Id"


@dataclasses.dataclass(frozen=True)
class WebhookSettings:
    """URL, extra headers, HMAC key (secret), header names, TLS, proxy, alerts per POST."""

    url: Secret
    headers: Mapping[str, Secret | str] = dataclasses.field(default_factory=dict)
    hmac_key: Secret | None = None
    signature_header: str = DEFAULT_SIGNATURE_HEADER
    timestamp_header: str = DEFAULT_TIMESTAMP_HEADER
    tls: TLSOptions = TLSOptions()
    proxy: ProxyOptions = ProxyOptions()
    batch: int = 1


def parse_settings(raw: Mapping[str, object], where: str,
                   env: Mapping[str, str] | None = None) -> WebhookSettings:
    """Settings of a `type: webhook` sink."""
    check_keys(raw, KEYS, where)
    for key in ("signature_header", "timestamp_header"):
        if key in raw and (not isinstance(raw[key], str) or not raw[key]):
            raise AlertsConfigError(f"{where}: '{key}' must be a header name")
    return WebhookSettings(
        url=parse_url(raw, where, env, allow_literal=True),
        headers=parse_headers(raw, where, env),
        hmac_key=read_secret(raw, "secret", where, env, required=False),
        signature_header=str(raw.get("signature_header", DEFAULT_SIGNATURE_HEADER)),
        timestamp_header=str(raw.get("timestamp_header", DEFAULT_TIMESTAMP_HEADER)),
        tls=parse_tls(raw.get("tls"), where),
        proxy=parse_proxy(raw, where, env),
        batch=parse_positive_int(raw.get("batch", 1), f"{where}: batch"),
    )


class WebhookSink(Sink):
    """POSTs one alert (JSON object) per request, or a JSON array when `batch` > 1."""

    def __init__(self, name: str, settings: WebhookSettings, *, timeout_s: float,
                 redactor: Redactor, clock: Callable[[], float] = time.time) -> None:
        super().__init__(name)
        self._settings = settings
        self.max_batch = settings.batch
        self._clock = clock
        for value in settings.headers.values():
            if isinstance(value, Secret):
                redactor.add(value.reveal())
        if settings.hmac_key is not None:
            redactor.add(settings.hmac_key.reveal())
        self._key = settings.hmac_key.reveal().encode() if settings.hmac_key else None
        self._static_headers = {k: v.reveal() if isinstance(v, Secret) else v
                                for k, v in settings.headers.items()}
        self._http = HttpPoster(settings.url.reveal(), sink=name, timeout_s=timeout_s,
                                tls=settings.tls, proxy=settings.proxy, redactor=redactor)

    def build_request(self, alerts: Sequence[Alert]) -> tuple[bytes, dict[str, str]]:
        """Body and headers of the POST carrying `alerts`."""
        if self._settings.batch == 1:
            body = alerts[0].json_bytes
        else:
            body = b"[" + b",".join(a.json_bytes for a in alerts) + b"]"
        headers = dict(self._static_headers)
        headers[ID_HEADER] = ",".join(a.uuid for a in alerts)
        if self._key is not None:
            ts = str(int(self._clock()))
            headers[self._settings.timestamp_header] = ts
            headers[self._settings.signature_header] = signature(self._key, ts, body)
        return body, headers

    def deliver(self, alerts: Sequence[Alert]) -> None:
        body, headers = self.build_request(alerts)
        self._http.check(self._http.post(body, headers))

    def describe(self) -> str:
        signed = ", HMAC-signed" if self._key else ""
        per = f", {self._settings.batch} per POST" if self._settings.batch > 1 else ""
        return f"webhook {self._http.display}{signed}{per}"

    def close(self) -> None:
        self._http.close()

    def abort(self) -> None:
        self._http.abort()
