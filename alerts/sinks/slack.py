"""Slack incoming-webhook sink (the webhook URL is a secret: url_env or url_file)."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence

from alerts.errors import AlertsConfigError
from alerts.http import HttpPoster, ProxyOptions, TLSOptions
from alerts.model import Alert
from alerts.secrets import Redactor, Secret
from alerts.sinks.base import Sink, check_keys
from alerts.sinks.http_settings import PROXY_KEYS, URL_KEYS, parse_proxy, parse_tls, parse_url
from alerts.sinks.slack_format import build_message

KEYS = URL_KEYS | PROXY_KEYS | {"channel", "username", "icon_emoji", "tls"}


@dataclasses.dataclass(frozen=True)
class SlackSettings:
    """Webhook URL (secret) and optional channel/username/icon overrides."""

    url: Secret
    channel: str | None = None
    username: str | None = None
    icon_emoji: str | None = None
    tls: TLSOptions = TLSOptions()
    proxy: ProxyOptions = ProxyOptions()


def parse_settings(raw: Mapping[str, object], where: str,
                   env: Mapping[str, str] | None = None) -> SlackSettings:
    """Settings of a `type: slack` sink."""
    check_keys(raw, KEYS, where)
    for key in ("channel", "username", "icon_emoji"):
        if key in raw and not isinstance(raw[key], str):
            raise AlertsConfigError(f"{where}: '{key}' must be a string")
    return SlackSettings(
        url=parse_url(raw, where, env, allow_literal=False),
        channel=raw.get("channel"), username=raw.get("username"),  # type: ignore[arg-type]
        icon_emoji=raw.get("icon_emoji"), tls=parse_tls(raw.get("tls"), where),  # type: ignore[arg-type]
        proxy=parse_proxy(raw, where, env),
    )


class SlackSink(Sink):
    """One Slack message per alert."""

    def __init__(self, name: str, settings: SlackSettings, *, timeout_s: float,
                 redactor: Redactor) -> None:
        super().__init__(name)
        self._settings = settings
        redactor.add(settings.url.reveal())
        self._http = HttpPoster(settings.url.reveal(), sink=name, timeout_s=timeout_s,
                                tls=settings.tls, proxy=settings.proxy, redactor=redactor)

    def deliver(self, alerts: Sequence[Alert]) -> None:
        s = self._settings
        for alert in alerts:
            body = json.dumps(build_message(alert, channel=s.channel, username=s.username,
                                            icon_emoji=s.icon_emoji), ensure_ascii=False).encode()
            self._http.check(self._http.post(body, {}))

    def describe(self) -> str:
        return f"slack {self._http.display}"

    def close(self) -> None:
        self._http.close()

    def abort(self) -> None:
        self._http.abort()
