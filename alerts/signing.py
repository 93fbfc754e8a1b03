"""HMAC-SHA256 signatures of webhook bodies, over "<timestamp>.<body>".

The sender puts the Unix time (seconds) in the timestamp header and
`sha256=<hex HMAC-SHA256(key, timestamp + "." + body)>` in the signature header.
Receivers recompute it, compare in constant time, and reject timestamps older than
their tolerance (replays). docs/alerts.md shows the receiver side.
"""
from __future__ import annotations

import hashlib
import hmac

DEFAULT_SIGNATURE_HEADER = "X-Netvigil-Signature"
DEFAULT_TIMESTAMP_HEADER = "X-Netvigil-Timestamp"
SCHEME = "sha256="


def signature(key: bytes, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` over `timestamp + "." + body`."""
    mac = hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return SCHEME + mac.hexdigest()


def verify(key: bytes, timestamp: str, body: bytes, received: str, *, now: float,
           tolerance_s: float = 300.0) -> bool:
    """True if `received` is the signature of this body and the timestamp is fresh."""
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent_at) > tolerance_s:
        return False
    return hmac.compare_digest(signature(key, timestamp, body), received)
