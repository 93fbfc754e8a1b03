"""falcosidekick sink: POST / with exactly the JSON body Falco's http_output sends."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from alerts.http import HttpPoster, ProxyOptions, TLSOptions
from alerts.model import Alert
from alerts.secrets import Redactor, Secret
from alerts.sinks.base import Sink, check_keys
from alerts.sinks.http_settings import (PROXY_KEYS, URL_KEYS, parse_headers, parse_proxy, parse_tls,
                                        parse_url)

KEYS = URL_KEYS | PROXY_KEYS | {"headers", "headers_env", "tls"}


@dataclasses.dataclass(frozen=True)
class FalcosidekickSettings:
    """falcosidekick's URL (e.g. http://falcosidekick:2801/), extra headers, TLS, proxy."""

    url: Secret
    headers: Mapping[str, Secret | str] = dataclasses.field(default_factory=dict)
    tls: TLSOptions = TLSOptions()
    proxy: ProxyOptions = ProxyOptions()


def parse_settings(raw: Mapping[str, object], where: str,
                   env: Mapping[str, str] | None = None) -> FalcosidekickSettings:
    """Settings of a `type: falcosidekick` sink."""
    check_keys(raw, KEYS, where)
    return FalcosidekickSettings(url=parse_url(raw, where, env, allow_literal=True),
                                 headers=parse_headers(raw, where, env),
                                 tls=parse_tls(raw.get("tls"), where),
                                 proxy=parse_proxy(raw, where, env))


class FalcosidekickSink(Sink):
    """One POST per alert, as Falco does; the body is the alert's Falco JSON."""

    def __init__(self, name: str, settings: FalcosidekickSettings, *, timeout_s: float,
                 redactor: Redactor) -> None:
        super().__init__(name)
        headers = {}
        for key, value in settings.headers.items():
            if isinstance(value, Secret):
                redactor.add(value.reveal())
                value = value.reveal()
            headers[key] = value
        self._headers = headers
        self._http = HttpPoster(settings.url.reveal(), sink=name, timeout_s=timeout_s,
                                tls=settings.tls, proxy=settings.proxy, redactor=redactor)

    def deliver(self, alerts: Sequence[Alert]) -> None:
        for alert in alerts:
            self._http.check(self._http.post(alert.json_bytes, self._headers))

    def describe(self) -> str:
        return f"falcosidekick {self._http.display}"

    def close(self) -> None:
        self._http.close()

    def abort(self) -> None:
        self._http.abort()
