"""The agent's YAML configuration file: where it is found, read strictly, every section
validated when it loads (before anything is started).

One lookup rule for every command (:func:`config_path`): ``--config FILE``, else
``$NETVIGIL_CONFIG``, else ``/etc/netvigil/netvigil.yaml`` when it exists, else no file
and the defaults (alerts to stdout, recording to the default directory).

Strict: duplicate keys and unknown keys at any depth are errors naming key and line;
booleans must be booleans; numbers are range-checked; YAML aliases cannot explode
(rules/userfile.py reads the file).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rules.checker import did_you_mean
from rules.units import duration_in
from rules.userfile import InputFileError, LocatedDict, key_position, load_yaml
from sensor.endpoint_config import (
    ApiConfig, HttpConfig, LogConfig, ReloadConfig, parse_api_config, parse_http_config,
    parse_log_config, parse_reload_config,
)
from sensor.bpf_program import DEFAULT_HOOKS, HOOK_SETS
from sensor.errors import ConfigError
from sensor.k8s.config import K8sConfig, parse_k8s_config
from sensor.recording.config import RecordConfig, parse_record_config

KNOWN_SECTIONS = ("sensor", "rules", "alerts", "record", "enforce", "kubernetes", "http", "api",
                  "log", "reload")
SENSOR_KEYS = ("ringbuf_pages", "hooks", "fold_repeats")
FOLD_PERIOD_RANGE_S = (0.1, 60.0)  # sensor.fold_repeats, when not 0
DEFAULT_FOLD_REPEATS_S = 1.0
"""sensor.fold_repeats by default: repeats of a network event folded into one summary per
second (as Cilium's monitor aggregation is on by default); 0 sends every event."""
RULES_KEYS = ("paths", "skip_unsupported", "enforce_mode")
DEFAULT_CONFIG = Path("/etc/netvigil/netvigil.yaml")
CONFIG_ENV = "NETVIGIL_CONFIG"
RINGBUF_PAGES_MAX = 1 << 16  # 256 MiB of 4 KiB pages per CPU ring


@dataclass
class AgentConfig:
    """Top-level settings; `alerts` and `enforce` stay raw for their packages to parse
    (they are validated when the file loads), `record` is parsed by the recording package."""

    source: str = "<defaults>"
    rules_paths: list[str] = field(default_factory=list)
    skip_unsupported: bool = True
    enforce_mode: str | None = None
    ringbuf_pages: int = 2048
    hooks: str = DEFAULT_HOOKS
    fold_repeats_s: float = DEFAULT_FOLD_REPEATS_S
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


def config_path(explicit: str | Path | None = None,
                environ: Mapping[str, str] | None = None) -> Path | None:
    """The config file a command reads: ``explicit``, else $NETVIGIL_CONFIG, else the
    default file if it exists, else None (defaults). A named file must exist."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None


def _where(source: str, mapping: Any, key: Any, dotted: str) -> str:
    """``file:line:col: dotted.key`` (``file: dotted.key`` when the line is unknown)."""
    pos = key_position(mapping, key)
    return f"{pos.prefix() if pos else source}: {dotted}"


def _section(data: Mapping[str, Any], name: str, source: str) -> dict[str, Any]:
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{_where(source, data, name, name)}: section '{name}' must be a "
                          "mapping")
    return value


def _known(section: Mapping[str, Any], allowed: tuple[str, ...], source: str, name: str
           ) -> None:
    for key in section:
        if key not in allowed:
            hint = did_you_mean(str(key), allowed)
            raise ConfigError(f"{_where(source, section, key, f'{name}.{key}')}: unknown key "
                              f"{key!r} in section {name} ({hint + '; ' if hint else ''}known: "
                              f"{', '.join(allowed)})")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The config file's sections as a mapping; errors name the file (and line:col)."""
    source = str(path)
    try:
        data, _ = load_yaml(path, source)
    except InputFileError as exc:
        raise ConfigError(exc.render()) from None
    if data is None:
        return LocatedDict()
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections {KNOWN_SECTIONS}")
    return data


def load_config(path: str | Path | None = None) -> AgentConfig:
    """The agent's configuration by the lookup rule (:func:`config_path`; None: look up).

    Every section is validated here, so a bad file fails before anything starts.
    """
    found = config_path(path)
    if found is None:
        return AgentConfig()
    source = str(found)
    data = read_config_file(found)
    for name in data:
        if name not in KNOWN_SECTIONS:
            raise ConfigError(f"{_where(source, data, name, str(name))}: unknown section(s) "
                              f"{name}; known: {', '.join(KNOWN_SECTIONS)}")
    cfg = AgentConfig(source=source)
    sensor = _section(data, "sensor", source)
    rules = _section(data, "rules", source)
    _known(sensor, SENSOR_KEYS, source, "sensor")
    _known(rules, RULES_KEYS, source, "rules")
    if "ringbuf_pages" in sensor:
        cfg.ringbuf_pages = _ringbuf_pages(sensor, source)
    if "hooks" in sensor:
        cfg.hooks = sensor["hooks"]
        if cfg.hooks not in HOOK_SETS:
            raise ConfigError(f"{_where(source, sensor, 'hooks', 'sensor.hooks')}: expected one of "
                              f"{', '.join(HOOK_SETS)}, got {cfg.hooks!r}")
    if "fold_repeats" in sensor:
        cfg.fold_repeats_s = _fold_period(sensor, source)
    cfg.rules_paths = _paths(rules, source)
    if "skip_unsupported" in rules:
        value = rules["skip_unsupported"]
        if not isinstance(value, bool):
            raise ConfigError(f"{_where(source, rules, 'skip_unsupported', 'rules.skip_unsupported')}"
                              f": expected true or false, got {value!r}")
        cfg.skip_unsupported = value
    cfg.enforce_mode = rules.get("enforce_mode")
    if cfg.enforce_mode not in (None, "audit", "enforce"):
        raise ConfigError(f"{_where(source, rules, 'enforce_mode', 'rules.enforce_mode')}: "
                          "rules.enforce_mode must be 'audit' or 'enforce'")
    cfg.record = parse_record_config(_section(data, "record", source), source)
    cfg.alerts = _section(data, "alerts", source)
    cfg.enforce = _section(data, "enforce", source)
    cfg.kubernetes = parse_k8s_config(_section(data, "kubernetes", source), source)
    cfg.http = parse_http_config(data.get("http"), source)
    cfg.api = parse_api_config(data.get("api"), source)
    cfg.log = parse_log_config(data.get("log"), source)
    cfg.reload = parse_reload_config(data.get("reload"), source)
    _validate_packages(cfg)
    return cfg


def _ringbuf_pages(sensor: Mapping[str, Any], source: str) -> int:
    value = sensor["ringbuf_pages"]
    if isinstance(value, bool) or not isinstance(value, int) or not \
            1 <= value <= RINGBUF_PAGES_MAX or value & (value - 1):
        raise ConfigError(f"{_where(source, sensor, 'ringbuf_pages', 'sensor.ringbuf_pages')}: "
                          f"expected a power of two from 1 to {RINGBUF_PAGES_MAX} (pages of "
                          f"4 KiB per ring), got {value!r}")
    return value


def _fold_period(sensor: Mapping[str, Any], source: str) -> float:
    where = _where(source, sensor, "fold_repeats", "sensor.fold_repeats")
    period = duration_in(sensor["fold_repeats"], where, ConfigError, allow_zero=True)
    low, high = FOLD_PERIOD_RANGE_S
    if period and not low <= period <= high:
        raise ConfigError(f"{where}: expected 0 (off) or a period from {low:g}s to {high:g}s, "
                          f"got {sensor['fold_repeats']!r}")
    return period


def _paths(rules: Mapping[str, Any], source: str) -> list[str]:
    value = rules.get("paths", [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise ConfigError(f"{_where(source, rules, 'paths', 'rules.paths')}: expected a list of "
                          "rules files or directories")
    return list(value)


def _validate_packages(cfg: AgentConfig) -> None:
    """Parse the alerts and enforce sections now (their packages own their meaning)."""
    from alerts import parse_alerts_config  # noqa: PLC0415
    from sensor.enforcement.config import parse_enforce_config  # noqa: PLC0415

    parse_alerts_config(cfg.alerts, cfg.source)
    parse_enforce_config(cfg.enforce, cfg.source)
