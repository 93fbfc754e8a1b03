"""`netvigil doctor`: what works on this machine and what to fix."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add `doctor` to the top-level parser."""
    p = sub.add_parser("doctor", help="check kernel, BCC, headers, mounts")
    p.set_defaults(func=lambda args: 0)
