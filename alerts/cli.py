"""`netvigil sinks ...` sub-commands.

The command line owner (sensor/cli.py) passes how the configuration is found and read:
alerts knows nothing of the agent's config file.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

from alerts.config import parse_alerts_config
from alerts.sinktest import run_sink_tests

#: --config value (None = the default lookup) -> (the raw `alerts:` section, its source name)
AlertsSectionReader = Callable[[str | None], tuple[Mapping[str, Any], str]]


def register(sub: argparse._SubParsersAction, read_section: AlertsSectionReader,
             config_help: str = "YAML config file") -> None:
    """Add `sinks test` to the top-level parser; `read_section` finds and reads the config."""
    p = sub.add_parser("sinks", help="test configured alert sinks")
    sinks_sub = p.add_subparsers(dest="sinks_command", required=True, metavar="ACTION")
    t = sinks_sub.add_parser(
        "test", help="send a test alert to every configured sink and report what happened",
        description="Send one test alert (rule 'netvigil sinks test', priority Notice) to each "
                    "sink of the config file's alerts: section, bypassing routing, and print per "
                    "sink whether it was delivered. Exit status 1 if any sink failed.")
    t.add_argument("--config", metavar="FILE", help=config_help)
    t.add_argument("--sink", metavar="NAME", action="append", default=[],
                   help="test only this sink (repeatable; disabled sinks can be named)")
    t.set_defaults(func=lambda args: cmd_sinks_test(args, read_section))


def cmd_sinks_test(args: argparse.Namespace, read_section: AlertsSectionReader) -> int:
    """Run `netvigil sinks test`; 0 if every sink took the test alert, else 1."""
    section, source = read_section(args.config)
    config = parse_alerts_config(section, source)
    results = run_sink_tests(config, args.sink)
    if not results:
        print(f"{source}: no sinks configured in the alerts: section")
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
