"""The agent's YAML configuration file: one section per concern, parsed by its owner."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sensor.endpoint_config import (
    ApiConfig, HttpConfig, LogConfig, ReloadConfig, parse_api_config, parse_http_config,
    parse_log_config, parse_reload_config,
)
from sensor.errors import ConfigError
from sensor.k8s.config import K8sConfig, parse_k8s_config
from sensor.recording.config import RecordConfig, parse_record_config

KNOWN_SECTIONS = ("sensor", "rules", "alerts", "record", "enforce", "kubernetes", "http", "api", "log", "reload")


@dataclass
class AgentConfig:
    """Top-level settings; `alerts` and `enforce` stay raw for their packages to parse,
    `record` is parsed by the recording package."""

    source: str = "<defaults>"
    rules_paths: list[str] = field(default_factory=list)
    skip_unsupported: bool = True
    enforce_mode: str | None = None
    ringbuf_pages: int = 2048
    record: RecordConfig = field(default_factory=RecordConfig)
    alerts: dict[str, Any] = field(default_factory=dict)
    enforce: dict[str, Any] = field(default_factory=dict)
    kubernetes: K8sConfig = field(default_factory=K8sConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    log: LogConfig = field(default_factory=LogConfig)
    reload: ReloadConfig = field(default_factory=ReloadConfig)

    @property
    def record_dir(self) -> str | None:
        """Where to record, or None when recording is disabled."""
        return str(self.record.directory) if self.record.enabled else None


def _section(data: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: section '{name}' must be a mapping")
    return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The config file's sections as a mapping; errors name the file (and line, for YAML)."""
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
    return data


def load_config(path: str | Path | None) -> AgentConfig:
    """Read a config file (None: defaults). Errors name the file and, for YAML, the line."""
    if path is None:
        return AgentConfig()
    source = str(path)
    data = read_config_file(path)
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
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: bad value: {exc}") from exc
    if cfg.enforce_mode not in (None, "audit", "enforce"):
        raise ConfigError(f"{source}: rules.enforce_mode must be 'audit' or 'enforce'")
    cfg.record = parse_record_config(record, source)
    cfg.alerts = _section(data, "alerts", source)
    cfg.enforce = _section(data, "enforce", source)
    cfg.kubernetes = parse_k8s_config(_section(data, "kubernetes", source), source)
    cfg.http = parse_http_config(data.get("http"), source)
    cfg.api = parse_api_config(data.get("api"), source)
    cfg.log = parse_log_config(data.get("log"), source)
    cfg.reload = parse_reload_config(data.get("reload"), source)
    return cfg
