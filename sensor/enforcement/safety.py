"""The safety list: destinations and ports that are never denied.

It is installed in the kernel (nv_safe) and checked after a deny entry
matched, so it wins over every rule, including broad CIDRs that merely
contain a protected address. The manager also refuses entries that lie
entirely inside it.
"""
from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from rules.addresses import parse_address
from sensor.enforcement.errors import ConfigError, InvalidEntryError
from sensor.enforcement.keys import DenyKey, SafeKey, parse_network

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.0/8", "::1/128")


def resolv_conf_nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    """Addresses of the `nameserver` lines of resolv.conf (missing file: none)."""
    servers: list[str] = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    addr = parts[1].split("%", 1)[0]
                    try:
                        ipaddress.ip_address(addr)
                    except ValueError:
                        log.warning("%s: ignoring bad nameserver %r", path, parts[1])
                        continue
                    servers.append(addr)
    except OSError:
        return []
    return servers


def kubernetes_api_server(env: Mapping[str, str] | None = None) -> list[SafeKey]:
    """The API server address from KUBERNETES_SERVICE_HOST (any port), if set."""
    env = os.environ if env is None else env
    host = env.get("KUBERNETES_SERVICE_HOST", "").strip()
    if not host:
        return []
    try:
        ipaddress.ip_address(host)
    except ValueError:
        log.warning("KUBERNETES_SERVICE_HOST=%r is not an IP address: not protected", host)
        return []
    return [SafeKey.build(host)]


def parse_safety_item(item: object, where: str) -> SafeKey:
    """One configured entry: "CIDR", "CIDR port N", "port N", or {cidr:, port:}."""
    try:
        if isinstance(item, int) and not isinstance(item, bool):
            return SafeKey.build("::/0", item)
        if isinstance(item, str):
            words = item.split()
            if len(words) == 2 and words[0] == "port":
                return SafeKey.build("::/0", int(words[1]))
            if len(words) == 3 and words[1] == "port":
                return SafeKey.build(words[0], int(words[2]))
            if len(words) == 1:
                return SafeKey.build(words[0])
        if isinstance(item, Mapping):
            unknown = set(item) - {"cidr", "port"}
            if unknown:
                raise ConfigError(f"{where}: unknown safety key(s) {sorted(unknown)}")
            return SafeKey.build(str(item.get("cidr", "::/0")), int(item.get("port", 0)))
    except (InvalidEntryError, ValueError) as exc:
        raise ConfigError(f"{where}: bad safety entry {item!r}: {exc}") from None
    raise ConfigError(f"{where}: bad safety entry {item!r} (want CIDR, 'CIDR port N', 'port N')")


@dataclass(frozen=True)
class SafetyList:
    """The resolved safety list."""

    entries: frozenset[SafeKey] = field(default_factory=frozenset)

    @classmethod
    def build(cls, *, loopback: bool = True, dns: bool = True, kubernetes_api: bool = True,
              extra: Sequence[SafeKey] = (), resolv_conf: str = "/etc/resolv.conf",
              env: Mapping[str, str] | None = None) -> SafetyList:
        """Defaults plus `extra`."""
        keys: set[SafeKey] = set(extra)
        if loopback:
            keys.update(SafeKey.build(c) for c in LOOPBACK)
        if dns:
            keys.update(SafeKey.build(a) for a in resolv_conf_nameservers(resolv_conf))
        if kubernetes_api:
            keys.update(kubernetes_api_server(env))
        return cls(frozenset(keys))

    def covers(self, key: DenyKey) -> bool:
        """True if every connection the deny entry could match is protected anyway."""
        net = parse_network(key.network)
        for s in self.entries:
            if s.port and s.port != key.port:
                continue
            snet = parse_network(s.network)
            if snet.version == net.version and net.subnet_of(snet):  # type: ignore[arg-type]
                return True
            if snet.version == 6 and snet.prefixlen == 0:
                return True
        return False

    def protects(self, address: str, port: int) -> bool:
        """True if a connection with this remote (or bound) address and port is never
        denied: the kernel's check (address, port) then (address, any port)."""
        addr = parse_address(address)
        if addr is None:
            return False
        for s in self.entries:
            if s.port and s.port != port:
                continue
            snet = parse_network(s.network)
            if addr.version == snet.version and addr in snet:
                return True
            if snet.version == 6 and snet.prefixlen == 0:
                return True   # ::/0 holds the v4-mapped space too
        return False

    def __iter__(self) -> Iterable[SafeKey]:  # type: ignore[override]
        return iter(sorted(self.entries))
