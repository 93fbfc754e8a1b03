"""The agent's YAML configuration file: one section per concern, parsed by its owner."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sensor.errors import ConfigError

DEFAULT_RECORD_DIR = "/var/lib/netvigil/recordings"
KNOWN_SECTIONS = ("sensor", "rules", "alerts", "record", "enforce")


@dataclass
class AgentConfig:
    """Top-level settings; `alerts` and `enforce` stay raw for their packages to parse."""

    source: str = "<defaults>"
    rules_paths: list[str] = field(default_factory=list)
    skip_unsupported: bool = True
    enforce_mode: str | None = None
    ringbuf_pages: int = 2048
    record_dir: str | None = DEFAULT_RECORD_DIR
    record_max_total_bytes: int = 1 << 30
    record_max_segment_bytes: int = 64 << 20
    alerts: dict[str, Any] = field(default_factory=dict)
    enforce: dict[str, Any] = field(default_factory=dict)


def _section(data: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: section '{name}' must be a mapping")
    return value


def load_config(path: str | Path | None) -> AgentConfig:
    """Read a config file (None: defaults). Errors name the file and, for YAML, the line."""
    if path is None:
        return AgentConfig()
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(f"{source}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections {KNOWN_SECTIONS}")
    unknown = sorted(set(data) - set(KNOWN_SECTIONS))
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {', '.join(unknown)}; known: {', '.join(KNOWN_SECTIONS)}")
    cfg = AgentConfig(source=source)
    sensor = _section(data, "sensor", source)
    rules = _section(data, "rules", source)
    record = _section(data, "record", source)
    try:
        cfg.ringbuf_pages = int(sensor.get("ringbuf_pages", cfg.ringbuf_pages))
        cfg.rules_paths = [str(p) for p in rules.get("paths", [])]
        cfg.skip_unsupported = bool(rules.get("skip_unsupported", True))
        cfg.enforce_mode = rules.get("enforce_mode")
        if record.get("enabled", True) is False:
            cfg.record_dir = None
        else:
            cfg.record_dir = str(record.get("dir", DEFAULT_RECORD_DIR))
        cfg.record_max_total_bytes = int(record.get("max_total_bytes", cfg.record_max_total_bytes))
        cfg.record_max_segment_bytes = int(record.get("max_segment_bytes", cfg.record_max_segment_bytes))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: bad value: {exc}") from exc
    if cfg.enforce_mode not in (None, "audit", "enforce"):
        raise ConfigError(f"{source}: rules.enforce_mode must be 'audit' or 'enforce'")
    cfg.alerts = _section(data, "alerts", source)
    cfg.enforce = _section(data, "enforce", source)
    return cfg
