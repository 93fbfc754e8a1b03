"""The `enforce:` section of the netvigil configuration file."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rules import units
from rules.userfile import at_line
from sensor.enforcement.errors import ConfigError
from sensor.enforcement.keys import SafeKey
from sensor.enforcement.layout import DEFAULT_BASE
from sensor.enforcement.safety import SafetyList, parse_safety_item

_KEYS = {"enabled", "pin_path", "cgroup", "interfaces", "mode", "safety", "sweep_interval",
         "persist", "max_entries"}
_SAFETY_KEYS = {"loopback", "dns", "kubernetes_api", "extra", "resolv_conf"}


@dataclass(frozen=True)
class EnforcementConfig:
    """Resolved enforcement settings."""

    enabled: bool = True
    pin_path: Path = DEFAULT_BASE
    cgroup: str | None = None          # cgroup2 path programs attach to; None = cgroup2 root
    interfaces: tuple[str, ...] = ()   # tc clsact classifiers go on these
    mode: str | None = None            # None = per rule; "audit" | "enforce" forces all
    loopback: bool = True
    dns: bool = True
    kubernetes_api: bool = True
    resolv_conf: str = "/etc/resolv.conf"
    safety_extra: tuple[SafeKey, ...] = ()
    sweep_interval_s: float = 1.0
    persist: bool = True               # leave enforcement in force when the agent exits
    max_entries: int = 60000           # total live entries (the deny map holds 65536)

    def safety_list(self) -> SafetyList:
        """The safety list these settings describe."""
        return SafetyList.build(loopback=self.loopback, dns=self.dns,
                                kubernetes_api=self.kubernetes_api, extra=self.safety_extra,
                                resolv_conf=self.resolv_conf)


def _bool(data: Mapping, key: str, default: bool, where: str) -> bool:
    v = data.get(key, default)
    if not isinstance(v, bool):
        raise ConfigError(f"{where}: {key} must be true or false, got {v!r}")
    return v


def parse_enforce_config(data: Mapping | None, source: str) -> EnforcementConfig:
    """Validate the `enforce:` mapping; errors name `source`."""
    if data is None:
        return EnforcementConfig()
    where = f"{source}: enforce"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = set(data) - _KEYS
    if unknown:
        first = sorted(unknown, key=str)[0]
        raise ConfigError(f"{where}: unknown key(s) {sorted(map(str, unknown))}"
                          f"{at_line(data, first)}")
    mode = data.get("mode")
    if mode not in (None, "audit", "enforce"):
        raise ConfigError(f"{where}.mode: audit or enforce, got {mode!r}")
    ifaces = data.get("interfaces", [])
    if not isinstance(ifaces, list) or not all(isinstance(i, str) and i for i in ifaces):
        raise ConfigError(f"{where}.interfaces: a list of interface names")
    interval = data.get("sweep_interval", 1.0)
    try:
        interval = units.parse_duration(interval)
    except units.UnitError as exc:
        raise ConfigError(f"{where}.sweep_interval: {exc}") from None
    max_entries = data.get("max_entries", 60000)
    if isinstance(max_entries, bool) or not isinstance(max_entries, int) \
            or not 1 <= max_entries <= 65536:
        raise ConfigError(f"{where}.max_entries: expected an integer from 1 to 65536, "
                          f"got {max_entries!r}")
    cgroup = data.get("cgroup")
    if cgroup is not None and not isinstance(cgroup, str):
        raise ConfigError(f"{where}.cgroup: a cgroup2 path")
    safety = data.get("safety") or {}
    if not isinstance(safety, Mapping):
        raise ConfigError(f"{where}.safety: expected a mapping")
    unknown = set(safety) - _SAFETY_KEYS
    if unknown:
        first = sorted(unknown, key=str)[0]
        raise ConfigError(f"{where}.safety: unknown key(s) {sorted(map(str, unknown))}"
                          f"{at_line(safety, first)}")
    extra_items = safety.get("extra", [])
    if not isinstance(extra_items, list):
        raise ConfigError(f"{where}.safety.extra: a list")
    extra = tuple(parse_safety_item(i, f"{where}.safety.extra[{n}]") for n, i in enumerate(extra_items))
    return EnforcementConfig(
        enabled=_bool(data, "enabled", True, where),
        pin_path=Path(str(data.get("pin_path", DEFAULT_BASE))),
        cgroup=cgroup,
        interfaces=tuple(ifaces),
        mode=mode,
        loopback=_bool(safety, "loopback", True, f"{where}.safety"),
        dns=_bool(safety, "dns", True, f"{where}.safety"),
        kubernetes_api=_bool(safety, "kubernetes_api", True, f"{where}.safety"),
        resolv_conf=str(safety.get("resolv_conf", "/etc/resolv.conf")),
        safety_extra=extra,
        sweep_interval_s=float(interval),
        persist=_bool(data, "persist", True, where),
        max_entries=max_entries,
    )

