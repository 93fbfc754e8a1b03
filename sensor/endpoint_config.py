"""The agent's endpoint sections of the config file: `http:`, `api:`, `log:`, `reload:`.

```yaml
http:                       # /healthz /readyz /metrics
  enabled: true
  address: 127.0.0.1        # loopback unless you ask (0.0.0.0 for a Prometheus scraping the node)
  port: 8765
  heartbeat_timeout: 10s    # /healthz fails when the poll loop has not turned for this long
api:                        # local unix socket: `netvigil observe`, `netvigil status`
  enabled: true
  socket: /run/netvigil/netvigil.sock
  group: null               # a group whose members may connect too (socket mode 0660)
  reader_queue: 8192        # events buffered per reader before it lags (drops, counted)
  history: 2048             # recent events kept for `observe --last N`
log:
  format: text              # text | json (one object per line)
  level: warning            # debug | info | warning | error
reload:
  watch: true               # reload rules and sinks when the config or a rules file changes
  interval: 2s              # how often files are checked (SIGHUP reloads at once)
```
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sensor.errors import ConfigError
from rules.units import duration_in

DEFAULT_HTTP_PORT = 8765
DEFAULT_SOCKET = Path("/run/netvigil/netvigil.sock")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class HttpConfig:
    """Where the agent serves /healthz, /readyz and /metrics."""

    enabled: bool = True
    address: str = "127.0.0.1"
    port: int = DEFAULT_HTTP_PORT
    heartbeat_timeout_s: float = 10.0


@dataclass(frozen=True)
class ApiConfig:
    """The local unix socket of `observe` and `status`."""

    enabled: bool = True
    socket: Path = DEFAULT_SOCKET
    group: str | None = None
    reader_queue: int = 8192
    history: int = 2048


@dataclass(frozen=True)
class LogConfig:
    """How the agent logs on stderr."""

    format: str | None = None   # None: the command line's choice (text by default)
    level: str | None = None


@dataclass(frozen=True)
class ReloadConfig:
    """Reloading rules and sinks from changed files."""

    watch: bool = True
    interval_s: float = 2.0


def _mapping(data: Any, where: str) -> Mapping[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: must be a mapping")
    return data


def _keys(data: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(known)}")


def _bool(data: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key}: true or false, got {value!r}")
    return value


def _int(data: Mapping[str, Any], key: str, default: int, lo: int, hi: int, where: str) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{where}.{key}: an integer {lo}..{hi}, got {value!r}")
    return value


def parse_listen_address(text: str, where: str) -> tuple[str, int]:
    """ADDR:PORT (or [V6]:PORT) as given to `--http`."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{where}: expected ADDR:PORT, got {text!r}")
    return _address(host or "127.0.0.1", where), int(port)


def _address(value: Any, where: str) -> str:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        raise ConfigError(f"{where}: an IP address, got {value!r}") from None


def parse_http_config(data: Any, source: str) -> HttpConfig:
    """The `http:` section."""
    where = f"{source}: http"
    data = _mapping(data, where)
    _keys(data, ("enabled", "address", "port", "heartbeat_timeout"), where)
    return HttpConfig(
        enabled=_bool(data, "enabled", True, where),
        address=_address(data.get("address", "127.0.0.1"), f"{where}.address"),
        port=_int(data, "port", DEFAULT_HTTP_PORT, 0, 65535, where),
        heartbeat_timeout_s=duration_in(data.get("heartbeat_timeout", 10), f"{where}.heartbeat_timeout", ConfigError),
    )


def parse_api_config(data: Any, source: str) -> ApiConfig:
    """The `api:` section."""
    where = f"{source}: api"
    data = _mapping(data, where)
    _keys(data, ("enabled", "socket", "group", "reader_queue", "history"), where)
    group = data.get("group")
    if group is not None and not (isinstance(group, (str, int)) and not isinstance(group, bool)):
        raise ConfigError(f"{where}.group: a group name or id, got {group!r}")
    socket_path = data.get("socket", str(DEFAULT_SOCKET))
    if not isinstance(socket_path, str) or not socket_path.startswith("/"):
        raise ConfigError(f"{where}.socket: an absolute path, got {socket_path!r}")
    return ApiConfig(
        enabled=_bool(data, "enabled", True, where),
        socket=Path(socket_path),
        group=None if group is None else str(group),
        reader_queue=_int(data, "reader_queue", 8192, 16, 1 << 20, where),
        history=_int(data, "history", 2048, 0, 1 << 20, where),
    )


def parse_log_config(data: Any, source: str) -> LogConfig:
    """The `log:` section."""
    where = f"{source}: log"
    data = _mapping(data, where)
    _keys(data, ("format", "level"), where)
    fmt, level = data.get("format"), data.get("level")
    if fmt is not None and fmt not in LOG_FORMATS:
        raise ConfigError(f"{where}.format: one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    if level is not None and str(level).lower() not in LOG_LEVELS:
        raise ConfigError(f"{where}.level: one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return LogConfig(fmt, None if level is None else str(level).lower())


def parse_reload_config(data: Any, source: str) -> ReloadConfig:
    """The `reload:` section."""
    where = f"{source}: reload"
    data = _mapping(data, where)
    _keys(data, ("watch", "interval"), where)
    return ReloadConfig(_bool(data, "watch", True, where),
                        duration_in(data.get("interval", 2), f"{where}.interval", ConfigError))


def with_http_override(cfg: HttpConfig, listen: str | None, disabled: bool) -> HttpConfig:
    """The `http:` settings after `--http ADDR:PORT` / `--no-http`."""
    if disabled:
        return replace(cfg, enabled=False)
    if listen:
        address, port = parse_listen_address(listen, "--http")
        return replace(cfg, enabled=True, address=address, port=port)
    return cfg
