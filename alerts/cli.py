"""`netvigil sinks ...` sub-commands."""
from __future__ import annotations

import argparse
import os

from alerts.config import parse_alerts_config
from alerts.sinktest import run_sink_tests

from sensor.config import read_config_file

DEFAULT_CONFIG = "/etc/netvigil/netvigil.yaml"


def register(sub: argparse._SubParsersAction) -> None:
    """Add `sinks test` to the top-level parser."""
    p = sub.add_parser("sinks", help="test configured alert sinks")
    sinks_sub = p.add_subparsers(dest="sinks_command", required=True, metavar="ACTION")
    t = sinks_sub.add_parser(
        "test", help="send a test alert to every configured sink and report what happened",
        description="Send one test alert (rule 'netvigil sinks test', priority Notice) to each "
                    "sink of the config file's alerts: section, bypassing routing, and print per "
                    "sink whether it was delivered. Exit status 1 if any sink failed.")
    t.add_argument("--config", metavar="FILE",
                   help=f"YAML config file (default: $NETVIGIL_CONFIG or {DEFAULT_CONFIG})")
    t.add_argument("--sink", metavar="NAME", action="append", default=[],
                   help="test only this sink (repeatable; disabled sinks can be named)")
    t.set_defaults(func=cmd_sinks_test)


def load_alerts_section(path: str) -> dict:
    """The raw `alerts:` section of the agent's config file (other sections are ignored)."""
    return read_config_file(path).get("alerts") or {}


def cmd_sinks_test(args: argparse.Namespace) -> int:
    """Run `netvigil sinks test`; 0 if every sink took the test alert, else 1."""
    path = args.config or os.environ.get("NETVIGIL_CONFIG") or DEFAULT_CONFIG
    config = parse_alerts_config(load_alerts_section(path), path)
    results = run_sink_tests(config, args.sink)
    if not results:
        print(f"{path}: no sinks configured in the alerts: section")
        return 1
    width = max(len(r.name) for r in results)
    desc_width = max(len(r.description) for r in results)
    for r in results:
        status = "ok  " if r.ok else "FAIL"
        print(f"{status}  {r.name.ljust(width)}  {r.description.ljust(desc_width)}  "
              f"{r.detail} ({r.elapsed_s * 1000:.0f} ms)")
    failed = sum(not r.ok for r in results)
    print(f"{len(results) - failed} of {len(results)} sink(s) took the test alert")
    return 1 if failed else 0
