"""The `alerts:` section of the netvigil config file, parsed and validated.

Errors name the file and the sink (`netvigil.yaml: alerts.sinks.oncall: ...`), never a
secret value. Secrets are resolved here (environment variables, files), so a missing
variable is reported when the config loads, not when the first alert fires.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import re
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from alerts.errors import AlertsConfigError
from alerts.priority import parse_priority
from alerts.sinks import SETTINGS_PARSERS, SINK_TYPES
from rules.userfile import at_line
from alerts.units import (parse_bool, parse_duration, parse_positive_int, parse_size,
                          parse_str_list)

MAX_RATE = 1e6
SINK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
FSYNC_POLICIES = ("always", "interval", "never")
DEFAULT_KEY_FIELDS: tuple[str, ...] = (
    "proc.exepath", "proc.cmdline", "container.id", "k8s.ns.name", "k8s.pod.name",
    "fd.rip", "fd.rport", "fd.lport",
)
TOP_KEYS = {"hostname", "spool_dir", "delivery", "noise", "sinks"}
COMMON_SINK_KEYS = {"type", "enabled", "min_priority", "rules", "tags", "delivery",
                    "dead_letter_file"}


@dataclasses.dataclass(frozen=True)
class DeliveryConfig:
    """Queueing, retry and spool settings of one sink."""

    queue_size: int = 1000
    timeout_s: float = 5.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 60.0
    retry_after_max_s: float = 300.0
    spool_max_bytes: int = 256 * 1024 * 1024
    spool_segment_bytes: int = 8 * 1024 * 1024
    fsync: str = "interval"
    fsync_interval_s: float = 1.0


@dataclasses.dataclass(frozen=True)
class RouteConfig:
    """Which alerts a sink takes: minimum priority, rule-name globs and tags to include/exclude."""

    min_priority: str = "Debug"
    include_rules: tuple[str, ...] = ()
    exclude_rules: tuple[str, ...] = ()
    include_tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class SinkConfig:
    """One configured sink: name, type, type-specific settings, routing, delivery."""

    name: str
    type: str
    settings: Any
    route: RouteConfig = RouteConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    enabled: bool = True
    dead_letter_file: str | None = None


@dataclasses.dataclass(frozen=True)
class AggregateConfig:
    """Identical alerts (same rule and same `key_fields` values) within `window_s` fold into one."""

    enabled: bool = True
    window_s: float = 60.0
    key_fields: tuple[str, ...] = DEFAULT_KEY_FIELDS


@dataclasses.dataclass(frozen=True)
class RateLimitConfig:
    """Per-rule token bucket: `rate_per_s` sustained, `burst` at once; the excess is counted
    and reported every `report_interval_s` in one summary alert."""

    enabled: bool = True
    rate_per_s: float = 20.0
    burst: int = 100
    report_interval_s: float = 60.0


@dataclasses.dataclass(frozen=True)
class NoiseConfig:
    """Aggregation and rate limiting, applied before routing to sinks."""

    aggregate: AggregateConfig = AggregateConfig()
    rate_limit: RateLimitConfig = RateLimitConfig()


@dataclasses.dataclass(frozen=True)
class AlertsConfig:
    """The parsed `alerts:` section."""

    sinks: tuple[SinkConfig, ...] = ()
    noise: NoiseConfig = NoiseConfig()
    hostname: str | None = None
    spool_dir: str | None = None
    source: str = "<config>"

    def sink(self, name: str) -> SinkConfig:
        """The sink called `name` (KeyError if none)."""
        for sink in self.sinks:
            if sink.name == name:
                return sink
        raise KeyError(name)


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise AlertsConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _check(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed, key=str)
    if unknown:
        raise AlertsConfigError(
            f"{where}: unknown key(s) {', '.join(map(str, unknown))}{at_line(raw, unknown[0])} "
            f"(allowed: {', '.join(sorted(allowed))})")


def parse_delivery(raw: object, where: str, base: DeliveryConfig = DeliveryConfig()) -> DeliveryConfig:
    """`delivery:` settings on top of `base` (the section-wide defaults)."""
    raw = _mapping(raw, where)
    _check(raw, {"queue_size", "timeout", "backoff_initial", "backoff_max", "retry_after_max",
                 "spool_max_bytes", "spool_segment_bytes", "fsync", "fsync_interval"}, where)
    changes: dict[str, Any] = {}
    if "queue_size" in raw:
        changes["queue_size"] = parse_positive_int(raw["queue_size"], f"{where}: queue_size")
    for key in ("timeout", "backoff_initial", "backoff_max", "retry_after_max", "fsync_interval"):
        if key in raw:
            changes[f"{key}_s"] = parse_duration(raw[key], f"{where}: {key}", allow_zero=False)
    for key in ("spool_max_bytes", "spool_segment_bytes"):
        if key in raw:
            changes[key] = parse_size(raw[key], f"{where}: {key}")
    if "fsync" in raw:
        if raw["fsync"] not in FSYNC_POLICIES:
            raise AlertsConfigError(
                f"{where}: fsync must be one of {', '.join(FSYNC_POLICIES)}, got {raw['fsync']!r}")
        changes["fsync"] = raw["fsync"]
    return dataclasses.replace(base, **changes)


def _include_exclude(raw: object, where: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    raw = _mapping(raw, where)
    _check(raw, {"include", "exclude"}, where)
    return (parse_str_list(raw.get("include", []), f"{where}: include"),
            parse_str_list(raw.get("exclude", []), f"{where}: exclude"))


def parse_route(raw: Mapping[str, Any], where: str) -> RouteConfig:
    """Routing keys of a sink: min_priority, rules.include/exclude, tags.include/exclude."""
    inc_rules, exc_rules = _include_exclude(raw.get("rules"), f"{where}: rules")
    inc_tags, exc_tags = _include_exclude(raw.get("tags"), f"{where}: tags")
    return RouteConfig(
        min_priority=parse_priority(raw.get("min_priority", "Debug"), f"{where}: min_priority"),
        include_rules=inc_rules, exclude_rules=exc_rules,
        include_tags=inc_tags, exclude_tags=exc_tags)


def parse_sink(name: object, raw: object, where: str, defaults: DeliveryConfig,
               env: Mapping[str, str] | None) -> SinkConfig:
    """One entry of `alerts.sinks`."""
    if not isinstance(name, str) or not SINK_NAME_RE.match(name):
        raise AlertsConfigError(f"{where}: sink name {name!r} must be 1-64 letters, digits, "
                                "'_', '.' or '-'")
    where = f"{where}.{name}"
    raw = _mapping(raw, where)
    sink_type = raw.get("type")
    if sink_type not in SINK_TYPES:
        raise AlertsConfigError(
            f"{where}: 'type' must be one of {', '.join(SINK_TYPES)}, got {sink_type!r}")
    specific = {k: v for k, v in raw.items() if k not in COMMON_SINK_KEYS}
    settings = SETTINGS_PARSERS[sink_type](specific, where, env)
    dead_letter = raw.get("dead_letter_file")
    if dead_letter is not None and (not isinstance(dead_letter, str) or not dead_letter):
        raise AlertsConfigError(f"{where}: dead_letter_file must be a path")
    return SinkConfig(
        name=name, type=sink_type, settings=settings, route=parse_route(raw, where),
        delivery=parse_delivery(raw.get("delivery"), f"{where}: delivery", defaults),
        enabled=parse_bool(raw.get("enabled", True), f"{where}: enabled"),
        dead_letter_file=dead_letter)


def parse_noise(raw: object, where: str) -> NoiseConfig:
    """`noise:` (aggregate + rate_limit)."""
    raw = _mapping(raw, where)
    _check(raw, {"aggregate", "rate_limit"}, where)
    agg_where, rl_where = f"{where}.aggregate", f"{where}.rate_limit"
    agg, rl = _mapping(raw.get("aggregate"), agg_where), _mapping(raw.get("rate_limit"), rl_where)
    _check(agg, {"enabled", "window", "key_fields"}, agg_where)
    _check(rl, {"enabled", "rate", "burst", "report_interval"}, rl_where)
    aggregate = AggregateConfig(
        enabled=parse_bool(agg.get("enabled", True), f"{agg_where}: enabled"),
        window_s=parse_duration(agg.get("window", 60.0), f"{agg_where}: window", allow_zero=False),
        key_fields=parse_str_list(agg.get("key_fields", list(DEFAULT_KEY_FIELDS)),
                                  f"{agg_where}: key_fields"))
    rate = rl.get("rate", RateLimitConfig.rate_per_s)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= MAX_RATE:
        raise AlertsConfigError(f"{rl_where}: rate must be a number of alerts per second "
                                f"above 0 and at most {MAX_RATE:g}, got {rate!r}")
    rate_limit = RateLimitConfig(
        enabled=parse_bool(rl.get("enabled", True), f"{rl_where}: enabled"),
        rate_per_s=float(rate),
        burst=parse_positive_int(rl.get("burst", RateLimitConfig.burst), f"{rl_where}: burst"),
        report_interval_s=parse_duration(rl.get("report_interval", 60.0),
                                         f"{rl_where}: report_interval", allow_zero=False))
    return NoiseConfig(aggregate=aggregate, rate_limit=rate_limit)


def parse_alerts_config(data: Mapping[str, Any] | None, source: str, *,
                        env: Mapping[str, str] | None = None) -> AlertsConfig:
    """Parse the `alerts:` section of the config file `source` (None = no section: no sinks).

    `env` replaces os.environ when resolving `*_env` secrets (tests).
    """
    where = f"{source}: alerts"
    raw = _mapping(data, where)
    _check(raw, TOP_KEYS, where)
    defaults = parse_delivery(raw.get("delivery"), f"{where}.delivery")
    sinks_raw = raw.get("sinks") or {}
    if isinstance(sinks_raw, Mapping):
        items = list(sinks_raw.items())
    elif isinstance(sinks_raw, list):
        items = []
        for i, entry in enumerate(sinks_raw):
            if not isinstance(entry, Mapping) or "name" not in entry:
                raise AlertsConfigError(f"{where}.sinks[{i}]: each sink needs a 'name'")
            items.append((entry["name"], {k: v for k, v in entry.items() if k != "name"}))
        names = [n for n, _ in items]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise AlertsConfigError(f"{where}.sinks: duplicate sink name(s) {', '.join(dup)}")
    else:
        raise AlertsConfigError(f"{where}.sinks: expected a mapping of sink name -> settings")
    sinks = tuple(parse_sink(name, body, f"{where}.sinks", defaults, env) for name, body in items)
    for key in ("hostname", "spool_dir"):
        if key in raw and (not isinstance(raw[key], str) or not raw[key]):
            raise AlertsConfigError(f"{where}: {key} must be a non-empty string")
    return AlertsConfig(sinks=sinks, noise=parse_noise(raw.get("noise"), f"{where}.noise"),
                        hostname=raw.get("hostname"), spool_dir=raw.get("spool_dir"),
                        source=source)


def apply_overrides(data: Mapping[str, Any] | None, overrides: Sequence[str],
                    source: str = "--alerts-set") -> dict[str, Any]:
    """Per-run overrides on the raw `alerts:` section: "SINK.KEY=VALUE" (VALUE is YAML).

    Examples: `slack.min_priority=Error`, `file.enabled=false`, `hook.delivery.timeout=2s`,
    `noise.rate_limit.rate=5`, `stdout.type=stdout` (adds a sink). Returns a new mapping.
    """
    result: dict[str, Any] = copy.deepcopy(dict(data or {}))
    for item in overrides:
        path, sep, value_text = item.partition("=")
        keys = [k for k in path.strip().split(".") if k]
        if not sep or len(keys) < 2:
            raise AlertsConfigError(f"{source}: {item!r}: expected SINK.KEY=VALUE")
        try:
            value = yaml.safe_load(value_text) if value_text.strip() else ""
        except yaml.YAMLError:
            value = value_text
        if keys[0] == "noise":
            node = result.setdefault("noise", {})
            keys = keys[1:]
        else:
            sinks = result.setdefault("sinks", {})
            if isinstance(sinks, list):
                sinks = {e.get("name"): {k: v for k, v in e.items() if k != "name"} for e in sinks}
                result["sinks"] = sinks
            node = sinks.setdefault(keys[0], {})
            keys = keys[1:]
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise AlertsConfigError(f"{source}: {item!r}: {key} is not a mapping")
        node[keys[-1]] = value
    return result


def with_default_sink(section: Mapping[str, Any] | None, *, json_lines: bool = False
                      ) -> dict[str, Any]:
    """The `alerts:` section, with one stdout sink when it configures none: the default of
    every command (`run`, `sinks test`) when there is no config file or no sink in it."""
    out = dict(section or {})
    if not out.get("sinks"):
        out["sinks"] = {"stdout": {"type": "stdout", "format": "json" if json_lines else "auto"}}
    return out


def resolve_hostname(config: AlertsConfig) -> str:
    """The hostname alerts carry: `alerts.hostname`, else $NODE_NAME (Kubernetes), else the host's."""
    return config.hostname or os.environ.get("NODE_NAME") or socket.gethostname()
