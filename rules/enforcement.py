"""netvigil's ``enforce:`` key: validation, and the requests the engine produces."""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

from rules.errors import EnforceConfigError, Position
from rules.units import parse_duration

ACTIONS = ("deny",)
TARGETS = ("remote", "listen_port")
SCOPES = ("process", "container", "pod", "workload", "namespace", "node")
MODES = ("audit", "enforce")
PROTOCOLS = ("tcp", "udp", "any")
_KEYS = ("action", "target", "scope", "ttl", "mode", "max_entries", "static")
_STATIC_KEYS = ("cidrs", "ports", "protocol", "cgroups")


@dataclass(frozen=True)
class EnforcementRequest:
    """A deny entry to install (detection-driven when ``event`` is set, else static)."""

    rule: str
    action: str
    target: str
    scope: str
    ttl_s: float
    mode: str
    max_entries: int
    event: Mapping[str, Any] | None
    cidrs: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    protocol: str = "any"
    cgroups: tuple[str, ...] = ()


@dataclass(frozen=True)
class StaticSpec:
    cidrs: tuple[str, ...]
    ports: tuple[int, ...]
    protocol: str
    cgroups: tuple[str, ...]


@dataclass(frozen=True)
class EnforceSpec:
    """A validated ``enforce:`` block."""

    action: str = "deny"
    target: str = "remote"
    scope: str = "container"
    ttl_s: float = 600.0
    mode: str = "audit"
    max_entries: int = 1000
    static: StaticSpec | None = None


def parse_enforce(value: Any, where: Callable[[str | None], Position | None]) -> EnforceSpec:
    """Validate an ``enforce:`` mapping; ``where(key)`` gives the position of a key."""
    if not isinstance(value, Mapping):
        raise EnforceConfigError("enforce: must be a mapping (action, target, scope, ttl, mode)",
                                 where(None))
    for key in value:
        if key not in _KEYS:
            from rules.checker import did_you_mean
            raise EnforceConfigError(f"unknown enforce key {key!r}", where(key),
                                     hint=did_you_mean(str(key), _KEYS))

    def choice(key: str, allowed: tuple[str, ...], default: str) -> str:
        v = value.get(key, default)
        if not isinstance(v, str) or v.lower() not in allowed:
            raise EnforceConfigError(f"enforce.{key} must be one of {', '.join(allowed)}, "
                                     f"not {v!r}", where(key))
        return v.lower()

    if "action" not in value:
        raise EnforceConfigError("enforce.action is required (deny)", where(None))
    action = choice("action", ACTIONS, "deny")
    target = choice("target", TARGETS, "remote")
    scope = choice("scope", SCOPES, "container")
    mode = choice("mode", MODES, "audit")
    try:
        ttl = parse_duration(value.get("ttl", 600))
    except ValueError as exc:
        raise EnforceConfigError(f"enforce.ttl: {exc}", where("ttl")) from None
    max_entries = value.get("max_entries", 1000)
    if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
        raise EnforceConfigError(f"enforce.max_entries must be a positive integer, not "
                                 f"{max_entries!r}", where("max_entries"))
    static = None
    if "static" in value:
        static = _parse_static(value["static"], lambda: where("static"))
    return EnforceSpec(action, target, scope, ttl, mode, max_entries, static)


def _parse_static(value: Any, where: Callable[[], Position | None]) -> StaticSpec:
    if not isinstance(value, Mapping):
        raise EnforceConfigError("enforce.static must be a mapping (cidrs, ports, protocol, "
                                 "cgroups)", where())
    for key in value:
        if key not in _STATIC_KEYS:
            raise EnforceConfigError(f"unknown enforce.static key {key!r}", where())
    cidrs = []
    for c in _as_list(value.get("cidrs", []), "cidrs", where):
        try:
            cidrs.append(str(ipaddress.ip_network(str(c), strict=False)))
        except ValueError:
            raise EnforceConfigError(f"enforce.static.cidrs: {c!r} is not a CIDR", where()) \
                from None
    ports = []
    for p in _as_list(value.get("ports", []), "ports", where):
        if isinstance(p, bool) or not isinstance(p, int) or not 0 < p < 65536:
            raise EnforceConfigError(f"enforce.static.ports: {p!r} is not a port (1-65535)",
                                     where())
        ports.append(p)
    proto = value.get("protocol", "any")
    if not isinstance(proto, str) or proto.lower() not in PROTOCOLS:
        raise EnforceConfigError(f"enforce.static.protocol must be tcp, udp or any, not "
                                 f"{proto!r}", where())
    cgroups = [str(c) for c in _as_list(value.get("cgroups", []), "cgroups", where)]
    for c in cgroups:
        if not c.startswith("/"):
            raise EnforceConfigError(f"enforce.static.cgroups: {c!r} must be an absolute "
                                     "cgroup2 path", where())
    if not cidrs and not ports:
        raise EnforceConfigError("enforce.static needs cidrs or ports", where())
    return StaticSpec(tuple(cidrs), tuple(ports), proto.lower(), tuple(cgroups))


def _as_list(value: Any, key: str, where: Callable[[], Position | None]) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    raise EnforceConfigError(f"enforce.static.{key} must be a list", where())


def effective_mode(spec: EnforceSpec, override: str | None) -> str:
    """The rule's mode after the global opt-in/force-audit override."""
    return override if override in MODES else spec.mode


def request_for_event(rule: str, spec: EnforceSpec, event: Mapping[str, Any],
                      mode_override: str | None = None) -> EnforcementRequest | None:
    """The deny request for a matched event, or None if the event lacks the target."""
    proto = event.get("fd.l4proto")
    protocol = proto if proto in ("tcp", "udp") else "any"
    if spec.target == "remote":
        rip, rport = event.get("fd.rip"), event.get("fd.rport")
        if not isinstance(rip, str):
            return None
        try:
            addr = ipaddress.ip_address(rip)
        except ValueError:
            return None
        cidrs = (f"{rip}/{addr.max_prefixlen}",)
        ports = (rport,) if isinstance(rport, int) and not isinstance(rport, bool) and rport > 0 \
            else ()
    else:
        lport = event.get("fd.lport")
        if isinstance(lport, bool) or not isinstance(lport, int) or lport <= 0:
            return None
        cidrs, ports = (), (lport,)
    return EnforcementRequest(rule, spec.action, spec.target, spec.scope, spec.ttl_s,
                              effective_mode(spec, mode_override), spec.max_entries, event,
                              cidrs, ports, protocol)


def static_request(rule: str, spec: EnforceSpec,
                   mode_override: str | None = None) -> EnforcementRequest | None:
    """The entry a rule's ``enforce.static`` installs at load, or None."""
    if spec.static is None:
        return None
    s = spec.static
    return EnforcementRequest(rule, spec.action, spec.target, spec.scope, spec.ttl_s,
                              effective_mode(spec, mode_override), spec.max_entries, None,
                              s.cidrs, s.ports, s.protocol, s.cgroups)
