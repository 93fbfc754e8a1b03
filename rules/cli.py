"""`netvigil rules ...` sub-commands."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add `rules check|test|fields` to the top-level parser."""
    p = sub.add_parser("rules", help="check, test and list rule fields")
    p.set_defaults(func=lambda args: 0)
