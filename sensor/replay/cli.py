"""`netvigil replay ...`: re-run rules over recorded history."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add `replay` to the top-level parser."""
    p = sub.add_parser("replay", help="replay recorded history through rules")
    p.set_defaults(func=lambda args: 0)
