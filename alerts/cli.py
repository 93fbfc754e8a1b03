"""`netvigil sinks ...` sub-commands."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add `sinks test` to the top-level parser."""
    p = sub.add_parser("sinks", help="test configured alert sinks")
    p.set_defaults(func=lambda args: 0)
