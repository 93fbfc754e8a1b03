"""Alert sinks: stdout, JSON-lines file, Slack, generic webhook, falcosidekick."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alerts.secrets import Redactor
from alerts.sinks import falcosidekick, jsonfile, slack, stdout, webhook
from alerts.sinks.base import Sink

#: type name -> settings parser `(raw, where, env) -> settings`.
SETTINGS_PARSERS: dict[str, Callable[..., Any]] = {
    "stdout": stdout.parse_settings,
    "file": jsonfile.parse_settings,
    "slack": slack.parse_settings,
    "webhook": webhook.parse_settings,
    "falcosidekick": falcosidekick.parse_settings,
}

SINK_TYPES: tuple[str, ...] = tuple(SETTINGS_PARSERS)


def build_sink(name: str, sink_type: str, settings: Any, *, timeout_s: float,
               redactor: Redactor) -> Sink:
    """Instantiate the sink `name` of `sink_type` from its parsed settings."""
    if sink_type == "stdout":
        return stdout.StdoutSink(name, settings)
    if sink_type == "file":
        return jsonfile.JsonFileSink(name, settings)
    if sink_type == "slack":
        return slack.SlackSink(name, settings, timeout_s=timeout_s, redactor=redactor)
    if sink_type == "webhook":
        return webhook.WebhookSink(name, settings, timeout_s=timeout_s, redactor=redactor)
    if sink_type == "falcosidekick":
        return falcosidekick.FalcosidekickSink(name, settings, timeout_s=timeout_s, redactor=redactor)
    raise ValueError(f"unknown sink type {sink_type!r}")


__all__ = ["Sink", "SINK_TYPES", "SETTINGS_PARSERS", "build_sink"]
