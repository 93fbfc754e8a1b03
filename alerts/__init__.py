"""netvigil alerts: alert model, sinks, routing and durable delivery.

The public API; `sensor` imports only these names (from ``alerts``), never a submodule.
Names load their module on first use, so importing ``alerts`` stays cheap for commands
that never route an alert.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from alerts.cli import register as register_cli
    from alerts.config import (AlertsConfig, apply_overrides, parse_alerts_config,
                               resolve_hostname, with_default_sink)
    from alerts.errors import AlertsError
    from alerts.model import Alert, format_time_ns
    from alerts.priority import PRIORITY_STYLES
    from alerts.report import format_stats, format_status, sink_states, stats_view
    from alerts.router import AlertRouter
    from alerts.sinks.stdout import format_text

_EXPORTS = {
    "Alert": "alerts.model", "format_time_ns": "alerts.model",
    "AlertsError": "alerts.errors",
    "AlertsConfig": "alerts.config", "parse_alerts_config": "alerts.config",
    "apply_overrides": "alerts.config", "resolve_hostname": "alerts.config",
    "with_default_sink": "alerts.config",
    "AlertRouter": "alerts.router",
    "format_stats": "alerts.report", "format_status": "alerts.report",
    "stats_view": "alerts.report", "sink_states": "alerts.report",
    "PRIORITY_STYLES": "alerts.priority",
    "format_text": "alerts.sinks.stdout",
    "register_cli": ("alerts.cli", "register"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'alerts' has no attribute {name!r}")
    module, attr = target if isinstance(target, tuple) else (target, name)
    value = getattr(import_module(module), attr)
    globals()[name] = value
    return value
