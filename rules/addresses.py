"""IP address text as rules and enforcement compare it: IPv4-mapped IPv6 is IPv4.

The sensor writes an IPv4 peer of a dual-stack socket as ``::ffff:a.b.c.d``; a rule's
``10.0.0.0/8`` and the enforcement safety list must see it as the IPv4 address it is.
"""
from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(text: str) -> IPAddress | None:
    """The address ``text`` names, an IPv4-mapped IPv6 one as IPv4; None if it is none."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr
