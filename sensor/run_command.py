"""`netvigil run`: the live sensor."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add `run` to the top-level parser."""
    p = sub.add_parser("run", help="run the sensor")
    p.set_defaults(func=lambda args: 0)
